"""The API backends' response cache (backends/responses.py): shards written by several
writers at once are all read back, a killed writer's torn last line is skipped, and the
key of a request moves with every field of it."""

from __future__ import annotations

import threading

from orchestrator.backends.base import Completion
from orchestrator.backends.responses import ResponseCache, request_key


def test_writers_at_once_each_keep_their_shard_and_a_reader_sees_all(tmp_path):
    writers = [ResponseCache(tmp_path) for _ in range(3)]

    def fill(w: int) -> None:
        for i in range(50):
            writers[w].put(f"{w}-{i}", Completion(f"text {w} {i}\n#### {i}", i, i % 2 == 0))

    threads = [threading.Thread(target=fill, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in writers:
        w.close()
    reader = ResponseCache(tmp_path)
    assert len(reader) == 150 and len(list(tmp_path.glob("*.jsonl"))) == 3
    assert reader.get("2-7") == Completion("text 2 7\n#### 7", 7, False)
    assert reader.get("absent") is None and reader.hits == 1


def test_a_torn_last_line_is_skipped(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put("whole", Completion("a", 1, True))
    cache.close()
    shard = next(tmp_path.glob("*.jsonl"))
    with shard.open("a") as handle:
        handle.write('{"key": "torn", "text": "half a resp')      # a writer killed mid-line
    reader = ResponseCache(tmp_path)
    assert len(reader) == 1 and reader.get("whole") == Completion("a", 1, True)


def test_the_key_moves_with_every_field():
    base = {"base_url": "http://h/v1", "endpoint": "completions", "model": "m", "prompt": "p",
            "max_tokens": 8, "temperature": 0.7, "top_p": 1.0, "seed": 3, "sample": 0}
    keys = {request_key(base)}
    for name, value in [("base_url", "http://g/v1"), ("endpoint", "chat"), ("model", "n"),
                        ("prompt", "q"), ("max_tokens", 9), ("temperature", 0.5),
                        ("top_p", 0.9), ("seed", 4), ("sample", 1)]:
        keys.add(request_key({**base, name: value}))
    assert len(keys) == 10
    assert request_key(dict(reversed(list(base.items())))) == request_key(base)
