"""Benchmark the offline transcriber: real-time factor (processing seconds per audio second).

Clips are Portuguese and English sentences spoken by espeak-ng and encoded as ogg/opus (the
WhatsApp voice-note format) by ffmpeg, plus one longer note made of several sentences. For
each clip the baseline, in the same run, is decoding the audio alone (what the transcriber
must do before the model runs); the measurement is the whole `WhisperTranscriber.transcribe`
(decode, features, whisper-base in CTranslate2 int8, beam 5), as the `transcribe_audio` job
runs it. Median of `--repeat` runs per clip.

Run: `make bench` (or `.venv/bin/python bench/bench_transcribe.py [--repeat N] [--threads N]`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import DATA, timed  # noqa: E402
from channels.transcription import WhisperTranscriber, packaged_model_dir  # noqa: E402

CLIPS = [
    ("gastei cinquenta reais no mercado", "pt-br", "pt"),
    ("bom dia, tudo bem com você?", "pt-br", "pt"),
    ("good morning, how are you today?", "en", "en"),
    ("my mother's birthday is in December", "en", "en"),
    (
        "bom dia. gastei cinquenta reais no mercado hoje de manhã. depois paguei a conta de luz "
        "e comprei pão na padaria. quanto eu já gastei este mês?",
        "pt-br",
        "pt",
    ),
]


def _clips(folder: Path) -> list[tuple[Path, str, str]]:
    from tests.speech import make_clip

    return [(make_clip(folder, text, voice), language, text) for text, voice, language in CLIPS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per clip (median kept)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: every core)")
    args = parser.parse_args(argv)

    from faster_whisper import decode_audio

    started = time.perf_counter()
    model_dir = packaged_model_dir(DATA / "models")
    joined = time.perf_counter() - started
    transcriber = WhisperTranscriber(model_dir, threads=args.threads)
    started = time.perf_counter()
    transcriber.load()
    loaded = time.perf_counter() - started
    threads = args.threads or os.cpu_count()
    print(f"whisper-base int8 on {threads} thread(s): model ready in {joined:.2f} s (join/check), "
          f"loaded in {loaded:.2f} s")  # fmt: skip

    total_audio = total_decode = total_work = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for path, language, text in _clips(Path(tmp)):
            seconds = len(decode_audio(str(path))) / 16000
            decode = statistics.median(timed(lambda p=path: decode_audio(str(p)), args.repeat))
            heard: list[str] = []

            def transcribe(p: Path = path, lang: str = language, out: list[str] = heard) -> None:
                out.append(transcriber.transcribe(p, language=lang).text)

            work = statistics.median(timed(transcribe, args.repeat))
            total_audio, total_decode, total_work = (
                total_audio + seconds, total_decode + decode, total_work + work,
            )  # fmt: skip
            print(f"{text[:38]:<38} {seconds:5.1f} s audio  decode {decode * 1000:6.1f} ms  "
                  f"transcribe {work:5.2f} s  RTF {work / seconds:4.2f}  "
                  f"ratio {work / decode:6.0f}x decode  -> {heard[-1][:48]!r}")  # fmt: skip
    print(f"{'all clips':<38} {total_audio:5.1f} s audio  decode {total_decode * 1000:6.1f} ms  "
          f"transcribe {total_work:5.2f} s  RTF {total_work / total_audio:4.2f}  "
          f"(baseline RTF, decode only: {total_decode / total_audio:.4f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
