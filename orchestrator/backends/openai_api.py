"""`openai` backend: a model behind an OpenAI-compatible server (`vllm serve`,
`transformers serve`, a hosted API), through the official `openai` client.

Every completion is one request (n > 1 is n requests with sample indices 0..n-1), so
each is cached alone in the store's response cache (`responses.py`): a stage killed
halfway and run again asks only for what is missing, and a re-run asks for nothing.
Requests run `max_concurrency` at a time on a thread pool (the sync client is
thread-safe). Retries are the client's own: openai>=1.40 retries 408, 409, 429 and
5xx answers and connection errors `max_retries` times, with exponential backoff
(0.5 s doubling to 8 s, jittered) or the server's Retry-After when it sends one
(up to 60 s; openai/_base_client.py `_should_retry`, `_calculate_retry_timeout`).

The API key is read from the environment variable the config names, handed to the
client and nothing else: it is in no request key, cache record, result or error
message. `openai` is the `[openai]` extra, imported only when this backend is built.

This module must not import ray, mlflow or the stages.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from orchestrator.backends.base import Completion, GenerationRequest, cut_at_stop
from orchestrator.backends.responses import ResponseCache, request_key
from orchestrator.config import OpenAIConfig


def sample_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of one request: distinct per prompt and sample, the same on every run."""
    digest = hashlib.sha256(f"{seed}/{prompt_index}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


class OpenAIBackend:
    def __init__(self, settings: OpenAIConfig, model: str, cache_dir: Path | None):
        try:
            import openai
        except ImportError as exc:
            raise RuntimeError("the openai backend (teacher.kind or generation.backend 'openai') "
                               "needs the openai client: pip install 'synthscale[openai]'") from exc
        self._key = os.environ.get(settings.api_key_env)
        if self._key is None:
            raise RuntimeError(f"openai.api_key_env: the environment variable "
                               f"{settings.api_key_env} is not set on {os.uname().nodename}; set "
                               "it to the API key (a local server accepts any value)")
        self.settings, self.model = settings, model
        self.client = openai.OpenAI(base_url=settings.base_url, api_key=self._key or "none",
                                    max_retries=settings.max_retries, timeout=settings.timeout_s)
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.requests = 0           # answered by the server (the client's retries not counted)
        self._count = threading.Lock()
        self._pool = ThreadPoolExecutor(settings.max_concurrency, thread_name_prefix="openai")

    def generate(self, prompts: Sequence[str], request: GenerationRequest) -> list[list[Completion]]:
        jobs = [(i, j) for i in range(len(prompts)) for j in range(request.n)]
        futures = [self._pool.submit(self._complete, prompts[i], request, i, j) for i, j in jobs]
        try:
            done = [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()          # what has not started is not paid for; answers so far are cached
            raise
        n = request.n
        return [done[i * n:(i + 1) * n] for i in range(len(prompts))]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()
        if self.cache is not None:
            self.cache.close()

    def body(self, prompt: str, request: GenerationRequest, i: int, j: int) -> dict[str, Any]:
        """The request's parameters (what the response cache key hashes, with the server)."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": request.max_new_tokens,
                                "temperature": request.temperature,
                                "seed": sample_seed(request.seed, i, j)}
        if request.temperature:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        if self.settings.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    def _complete(self, prompt: str, request: GenerationRequest, i: int, j: int) -> Completion:
        body = self.body(prompt, request, i, j)
        key = request_key({"base_url": self.settings.base_url.rstrip("/"),
                           "endpoint": self.settings.endpoint, "sample": j, **body})
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            return cached
        completion = self._ask(body, request.stop)
        if self.cache is not None:
            self.cache.put(key, completion)
        return completion

    def _ask(self, body: dict[str, Any], stop: Sequence[str]) -> Completion:
        import openai

        try:
            if self.settings.endpoint == "chat":
                response = self.client.chat.completions.create(**body)
                choice = response.choices[0]
                text = choice.message.content or ""
            else:
                response = self.client.completions.create(**body)
                choice = response.choices[0]
                text = choice.text
        except openai.APIError as exc:
            raise RuntimeError(self._describe(exc)) from None   # the chained one may quote the key
        with self._count:
            self.requests += 1
        text, stopped = cut_at_stop(text, stop)
        tokens = getattr(response.usage, "completion_tokens", 0) or 0
        return Completion(text, int(tokens), stopped or choice.finish_reason == "stop")

    def _describe(self, exc: Exception) -> str:
        """A user's error line: where, what, and no trace of the key."""
        s = self.settings
        where = f"openai backend: {s.endpoint} request to {s.base_url} for model {self.model!r}"
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            return (f"{where}: HTTP {status}, the server refused the key in {s.api_key_env}")
        detail = str(exc)
        if self._key:
            detail = detail.replace(self._key, "***")
        what = f"HTTP {status}" if status else type(exc).__name__
        return f"{where} failed ({what}, after up to {s.max_retries} retries): {detail[:300]}"
