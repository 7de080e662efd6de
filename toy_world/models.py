"""What the toy world's models share with the test harness's tiny ones: a CLIP tokenizer vocabulary written in code
(no hub) and Stable Diffusion 1.5's noise schedule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2/CLIP byte-to-printable-character table used by byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def write_clip_tokenizer_files(directory: Path, words: Sequence[str]) -> Path:
    """Write a tiny CLIP BPE vocabulary (``vocab.json``, ``merges.txt``) into ``directory``.

    The vocabulary holds every byte-level character alone and with the end-of-word marker
    ``</w>`` (so any text tokenizes), the merges that spell each word of ``words`` as one token,
    and CLIP's two special tokens last, as in the real CLIP vocabulary.
    """
    directory.mkdir(parents=True, exist_ok=True)
    byte_chars = list(_bytes_to_unicode().values())
    vocab: List[str] = byte_chars + [c + "</w>" for c in byte_chars]
    merges: List[str] = []
    for word in words:
        # Merge left to right: "p h", "ph o", "pho t", "phot o</w>" for "photo".
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            merged = symbols[0] + symbols[1]
            rule = f"{symbols[0]} {symbols[1]}"
            if rule not in merges:
                merges.append(rule)
            if merged not in vocab:
                vocab.append(merged)
            symbols = [merged] + symbols[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return directory


SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
"""Stable Diffusion 1.5's training schedule, sampled with DDIM (its scheduler_config.json)."""
