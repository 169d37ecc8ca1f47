"""Real test audio: sentences spoken by espeak-ng, as WhatsApp voice notes (ogg/opus by ffmpeg).

Clips are made once per session. Import the fixtures into a test module to use them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from channels.transcription import packaged_model_dir

SpeakFn = Callable[[str, str], bytes]


def _tools() -> None:
    missing = [tool for tool in ("espeak-ng", "ffmpeg") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the voice-note tests make their audio with "
            "them (`make install` installs them as root, or apt-get install espeak-ng ffmpeg)"
        )


def _run(args: list[str]) -> None:
    subprocess.run(args, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)


def make_clip(folder: Path, text: str, voice: str) -> Path:
    """Speak `text` with espeak-ng's `voice` and encode it as ogg/opus; return the file."""
    _tools()
    name = f"{voice}-{abs(hash(text)):x}"
    ogg = folder / f"{name}.ogg"
    if not ogg.exists():
        wav = folder / f"{name}.wav"
        _run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text])
        _run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav),
              "-c:a", "libopus", "-b:a", "24k", str(ogg)])  # fmt: skip
    return ogg


def make_tone(folder: Path, seconds: float) -> Path:
    """A sine tone of `seconds` as ogg/opus (for the duration cap)."""
    _tools()
    ogg = folder / f"tone-{seconds:g}.ogg"
    if not ogg.exists():
        tone = f"sine=frequency=440:duration={seconds}"
        _run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", tone,
              "-c:a", "libopus", str(ogg)])  # fmt: skip
    return ogg


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's folder of generated audio."""
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def speak(clips: Path) -> SpeakFn:
    """Return `speak(text, voice) -> ogg bytes`, cached for the session."""

    def speak(text: str, voice: str) -> bytes:
        return make_clip(clips, text, voice).read_bytes()

    return speak


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged whisper-base model, joined once for the session."""
    return packaged_model_dir(tmp_path_factory.mktemp("models"))
