"""Loaders for the toy-world data sets, with validation and checksum verification.

Layout of a data folder (``data/`` by default, or ``$COURSE_DATA_DIR``)::

    MANIFEST.sha256                  sha256 of every other file ("<hex>  <path>", as `sha256sum -c` reads)
    sft/train.jsonl                  {"prompt", "completion"}: the corpus the reference model was trained on
    preferences/{split}.jsonl        {"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"}
    preferences/{split}_bradley_terry.jsonl   the same pairs, labelled by a Bradley-Terry coin flip
    rankings/{split}.jsonl           {"prompt", "responses": [K strings], "rewards": [K floats]}
    reference_model/                 the tiny GPT-2 and its tokenizer
    bandit/d1_sweep.pt               the IPO bandit's stored sweep (``python -m course_lib.build_data --d1-sweep``)

The manifest lists every file, and the default loaders verify what they read against it
(``load_preferences``, ``load_rankings``, ``load_sft_corpus``, ``models.load_model_and_tokenizer``,
``bandit.load_d1_sweep``). ``load_pairs`` reads any preference data set in TRL's format (a local folder
or a hub name), row by row, checked, through the same record reader.

Continuations (``completion``, ``chosen``, ``rejected``, ``responses``) start with one space, as in TRL's
documented format, because TRL joins ``prompt + chosen`` as strings before tokenizing. Our own code splits
on whitespace, so the space changes nothing there.
"""

import difflib
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

from ..maths.checks import check_choice, check_record
from .batching import check_messages, encode_prompt, encode_response
from .task import MAX_POSITIONS, VOCAB, true_reward

MANIFEST = "MANIFEST.sha256"
SPLITS = ("train", "test")
LABELLINGS = ("deterministic", "bradley_terry")
REBUILD_HINT = "Restore it with `git checkout -- data/` or rebuild with `python -m course_lib.build_data --out DIR`."
_WORDS = frozenset(VOCAB)


class DataIntegrityError(ValueError):
    """A data file is missing, changed or truncated with respect to MANIFEST.sha256."""


def data_dir() -> Path:
    """Returns the data folder: ``$COURSE_DATA_DIR`` if set, else ``<repo>/data``."""
    env = os.environ.get("COURSE_DATA_DIR")
    return Path(env).expanduser().resolve() if env else Path(__file__).resolve().parents[2] / "data"


# ----------------------------------------------------------------------------- files and the manifest
def sha256_file(path: str | os.PathLike) -> str:
    """Computes the hex sha256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` all or nothing: a temporary file in the same folder, then ``os.replace``.

    A full disk or a killed process leaves the previous file as it was (and no temporary file behind).
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_manifest(folder: str | os.PathLike, files: list[str] | None = None) -> Path:
    """Writes ``folder/MANIFEST.sha256`` with the sha256 of ``files`` (relative paths; default: every other file)."""
    folder = Path(folder)
    if files is None:
        files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST]
    lines = [f"{sha256_file(folder / rel)}  {rel}\n" for rel in sorted(files)]
    return write_atomically(folder / MANIFEST, "".join(lines).encode("utf-8"))


def update_manifest(folder: str | os.PathLike, files: list[str]) -> Path:
    """Add or refresh the entries of ``files`` (relative paths) in ``folder``'s manifest, keeping the others."""
    folder = Path(folder)
    listed = set(read_manifest(folder)) if (folder / MANIFEST).is_file() else set()
    return write_manifest(folder, sorted(listed | set(files)))


def read_manifest(folder: str | os.PathLike | None = None) -> dict[str, str]:
    """``{relative path: sha256}`` from ``folder/MANIFEST.sha256``; DataIntegrityError if missing or malformed."""
    manifest = (Path(folder) if folder is not None else data_dir()) / MANIFEST
    if not manifest.is_file():
        raise DataIntegrityError(f"{manifest} is missing, so the data cannot be verified. {REBUILD_HINT}")
    expected = {}
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DataIntegrityError(f"{manifest}, line {n}: not a '<sha256>  <path>' line: {line!r}. {REBUILD_HINT}")
        expected[rel] = digest
    return expected


def verify_manifest(folder: str | os.PathLike | None = None, files: list[str] | None = None) -> None:
    """Checks files of ``folder`` against its MANIFEST.sha256; raises DataIntegrityError on any mismatch.

    ``files`` (paths relative to ``folder``) restricts the check; by default every listed file is checked.
    """
    folder = Path(folder) if folder is not None else data_dir()
    expected = read_manifest(folder)
    for rel in files if files is not None else sorted(expected):
        path = folder / rel
        if rel not in expected:
            raise DataIntegrityError(f"{path} is not listed in {folder / MANIFEST}. {REBUILD_HINT}")
        if not path.is_file():
            raise DataIntegrityError(f"{path} is missing (listed in {folder / MANIFEST}). {REBUILD_HINT}")
        actual = sha256_file(path)
        if actual != expected[rel]:
            raise DataIntegrityError(
                f"{path} has changed or is truncated: its sha256 is {actual[:12]}..., the manifest expects "
                f"{expected[rel][:12]}... ({path.stat().st_size} bytes now). {REBUILD_HINT}"
            )


def verify_if_listed(path: str | os.PathLike) -> None:
    """Check a file or folder against the first MANIFEST.sha256 above it, when that manifest lists it.

    A folder must hold exactly its listed files (a stray file could change what loads). Raises
    DataIntegrityError naming a changed, truncated, missing or unlisted file; does nothing outside a manifest.
    """
    path = Path(path).resolve()
    folder = next((parent for parent in path.parents if (parent / MANIFEST).is_file()), None)
    if folder is None:
        return
    rel, expected = path.relative_to(folder).as_posix(), read_manifest(folder)
    if rel in expected:
        return verify_manifest(folder, [rel])
    listed = sorted(name for name in expected if name.startswith(rel + "/"))
    if not listed:
        return
    present = {p.relative_to(folder).as_posix() for p in path.rglob("*") if p.is_file()}
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise DataIntegrityError(f"{folder / unlisted[0]} is not listed in {folder / MANIFEST}. {REBUILD_HINT}")
    verify_manifest(folder, listed)


# ----------------------------------------------------------------------------- local paths and hub ids
#: What a hub id looks like: ``name`` or ``owner/name`` (letters, digits, ``-``, ``_``, ``.``).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def local_path_or_hub_id(name_or_path: str | os.PathLike, what: str) -> Path | str:
    """A ``Path`` when ``name_or_path`` means a local file or folder, else the hub id (a ``str``).

    Local: a ``Path``; anything that exists; a name starting with ``.``, ``~`` or ``/``, holding a
    backslash, two or more ``/``, or characters a hub id cannot have; and ``dir/name`` where ``dir`` is
    an existing local folder (``data/reference_modl`` is a typo, not a hub repository). A local name that
    does not exist raises FileNotFoundError at once (no network lookup, no retries), naming ``what``.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return path
    first = text.split("/", 1)[0]
    local = (
        isinstance(name_or_path, Path)
        or text.startswith((".", "~", "/"))
        or "\\" in text
        or text.count("/") > 1
        or ("/" in text and first and Path(first).expanduser().is_dir())
        or not _HUB_ID.fullmatch(text)
    )
    if not local:
        return text
    raise _not_found(what, name_or_path)


def _not_found(what: str, name_or_path) -> FileNotFoundError:
    """The error for a local path that does not exist, with the closest existing name beside it."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser().absolute()
    hint = ""
    if path.parent.is_dir():  # a typo next to what was meant? ("data/reference_modl")
        siblings = [p.name for p in path.parent.iterdir() if not p.name.startswith(".")]
        close = difflib.get_close_matches(path.name, siblings, n=1, cutoff=0.75)
        hint = f"; did you mean {str(Path(text).parent / close[0])!r}?" if close else ""
    return FileNotFoundError(
        f"{what} {text!r}: no such file or folder ({path} does not exist{hint}). A hub id looks like 'owner/name'."
    )


# ----------------------------------------------------------------------------- reading records
def read_jsonl(path: str | os.PathLike, *, hint: str = REBUILD_HINT) -> list[tuple[int, dict]]:
    """Reads a JSON-lines file into ``[(line_number, record)]``; raises ValueError naming file and line
    (malformed JSON, a line that is not an object, text that is not UTF-8, a file with no record)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist. {hint}".strip())
    records = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}, line {n}: not UTF-8 text (byte {raw[e.start : e.start + 1]!r} at column {e.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}: malformed JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {n}: expected a JSON object, got {type(record).__name__}")
            records.append((n, record))
    if not records:
        raise ValueError(f"{path} contains no records")
    return records


def _records(folder, rel: str, verify: bool, fields: tuple[str, ...]) -> list[tuple[str, dict]]:
    """``[("<file>, line <n>", record)]`` of ``rel`` in ``folder`` (default: :func:`data_dir`); every record
    holds ``fields``. A data folder that does not exist raises FileNotFoundError naming it (never a hub lookup)."""
    if folder is not None and not Path(folder).expanduser().is_dir():
        raise _not_found("data_dir", folder)
    folder = Path(folder).expanduser() if folder is not None else data_dir()
    if verify:
        verify_manifest(folder, [rel])
    path = folder / rel
    return [(f"{path}, line {n}", check_record(f"{path}, line {n}", r, fields)) for n, r in read_jsonl(path)]


def _check_text(where: str, field: str, value, prompt: str | None = None) -> str:
    """A non-empty string of vocabulary words that fits the toy model's context after ``prompt``."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    if not value.split():
        raise ValueError(f"{where}: field {field!r} is empty")
    for word in value.split():
        if word not in _WORDS:
            raise ValueError(f"{where}: field {field!r} contains {word!r}, which is not in the toy vocabulary")
    positions = len(value.split()) + 1 + (len(prompt.split()) if prompt is not None else 0)  # + <eos>
    if prompt is not None and positions > MAX_POSITIONS:
        raise ValueError(
            f"{where}: the prompt and field {field!r} take {positions} positions with <eos>, more than the toy "
            f"model's context of {MAX_POSITIONS}"
        )
    return value


def _check_reward(where: str, field: str, value, response: str) -> float:
    """A finite number equal to ``true_reward(response)``, returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: field {field!r} must be a finite number, got {value!r}")
    if abs(value - true_reward(response)) > 1e-4:
        raise ValueError(f"{where}: {field}={value} but true_reward of the response is {true_reward(response)}")
    return float(value)


# ----------------------------------------------------------------------------- loaders
def load_preferences(
    split: str = "train", *, labelling: str = "deterministic", data_dir=None, verify: bool = True
) -> list[dict]:
    """Loads preference pairs as a list of dicts (TRL's preference format plus true rewards).

    Each record: ``{"prompt": str, "chosen": str, "rejected": str,
    "chosen_reward": float, "rejected_reward": float}``. ``labelling`` is
    "deterministic" (the higher true reward is chosen) or "bradley_terry" (the
    same pairs, chosen with probability sigmoid(r_chosen - r_rejected)).
    ``verify`` checks the file against MANIFEST.sha256 first. A bad record raises ValueError naming
    the file and line (a word outside the vocabulary, a pair longer than the toy model's context, ...).
    """
    check_choice("split", split, SPLITS)
    check_choice("labelling", labelling, LABELLINGS)
    rel = f"preferences/{split}.jsonl" if labelling == "deterministic" else f"preferences/{split}_bradley_terry.jsonl"
    fields = ("prompt", "chosen", "rejected", "chosen_reward", "rejected_reward")
    pairs = []
    for where, r in _records(data_dir, rel, verify, fields):
        prompt = _check_text(where, "prompt", r["prompt"])
        chosen, rejected = (_check_text(where, field, r[field], prompt) for field in ("chosen", "rejected"))
        if chosen.split() == rejected.split():
            raise ValueError(f"{where}: chosen and rejected are the same response {chosen!r}")
        rewards = {f"{f}_reward": _check_reward(where, f"{f}_reward", r[f"{f}_reward"], r[f]) for f in fields[1:3]}
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, **rewards})
    return pairs


def load_rankings(split: str = "train", *, data_dir=None, verify: bool = True) -> list[dict]:
    """Loads RRHF rankings: ``[{"prompt": str, "responses": [str] * K, "rewards": [float] * K}]``.

    Responses of a record are distinct samples of the reference model, in
    sampling order (not sorted); ``rewards[k] = true_reward(responses[k])``.
    """
    check_choice("split", split, SPLITS)
    rankings = []
    for where, r in _records(data_dir, f"rankings/{split}.jsonl", verify, ("prompt", "responses", "rewards")):
        responses, rewards = r["responses"], r["rewards"]
        if not isinstance(responses, list) or not isinstance(rewards, list) or len(responses) != len(rewards):
            raise ValueError(f"{where}: 'responses' and 'rewards' must be lists of the same length")
        if len(responses) < 2:
            raise ValueError(f"{where}: a ranking needs at least 2 responses, got {len(responses)}")
        prompt = _check_text(where, "prompt", r["prompt"])
        responses = [_check_text(where, f"responses[{k}]", x, prompt) for k, x in enumerate(responses)]
        if len({tuple(x.split()) for x in responses}) != len(responses):
            raise ValueError(f"{where}: the responses are not distinct")
        rewards = [_check_reward(where, f"rewards[{k}]", v, x) for k, (v, x) in enumerate(zip(rewards, responses))]
        rankings.append({"prompt": prompt, "responses": responses, "rewards": rewards})
    return rankings


def load_sft_corpus(*, data_dir=None, verify: bool = True) -> list[dict]:
    """Loads the unlabelled SFT corpus: ``[{"prompt": str, "completion": str}]``."""
    corpus = []
    for where, r in _records(data_dir, "sft/train.jsonl", verify, ("prompt", "completion")):
        prompt = _check_text(where, "prompt", r["prompt"])
        corpus.append({"prompt": prompt, "completion": _check_text(where, "completion", r["completion"], prompt)})
    return corpus


# ----------------------------------------------------------------------------- any data set in TRL's preference format
def load_pairs(
    dataset: str | None, labelling: str, *, tokenizer=None, context: int | None = None
) -> tuple[list[dict], list[dict]]:
    """(train, test) preference pairs: the toy data by default, else a folder or hub dataset.

    A local folder is read line by line (``train.jsonl``, and ``test.jsonl`` when present), without the
    ``datasets`` library, so nothing goes over the network; every row is checked and a bad one raises
    ValueError naming its file and line: malformed JSON, a missing field, a message without
    ``content``, ``chosen == rejected``, an empty prompt or response. With a ``tokenizer``, every pair
    must also encode, and fit ``context`` positions when given (the model's context). A hub dataset's
    rows are named by split and row number.
    """
    if dataset is None:
        return load_preferences("train", labelling=labelling), load_preferences("test", labelling=labelling)
    pairs = {
        split: [_checked_pair(row, where, tokenizer, context) for where, row in rows]
        for split, rows in _dataset_rows(dataset).items()
    }
    train = pairs["train"]
    if "test" in pairs:
        return train, pairs["test"]
    n_test = max(1, len(train) // 10)  # no test split: hold the last tenth out of training
    if len(train) < 2:
        raise ValueError(f"dataset {dataset!r} has {len(train)} pair(s) and no test split: nothing to hold out")
    return train[:-n_test], train[-n_test:]


def _dataset_rows(dataset: str) -> dict[str, list[tuple[str, dict]]]:
    """``{split: [(where, row)]}`` from a local folder (where = "file, line n") or the hub ("name [split] row i")."""
    where = local_path_or_hub_id(dataset, "--dataset")
    if isinstance(where, Path):
        if not (where / "train.jsonl").is_file():
            raise FileNotFoundError(f"--dataset {dataset!r} has no train.jsonl")
        return {s: _records(where, f"{s}.jsonl", False, ()) for s in SPLITS if (where / f"{s}.jsonl").is_file()}
    from datasets import load_dataset

    loaded = load_dataset(dataset)  # a hub name: needs a network connection
    if "train" not in loaded:
        raise ValueError(f"dataset {dataset!r} has no train split (it has {sorted(loaded)})")
    return {s: [(f"{dataset} [{s}] row {i}", dict(r)) for i, r in enumerate(loaded[s])] for s in SPLITS if s in loaded}


def _checked_pair(row: dict, where: str, tokenizer=None, context: int | None = None) -> dict:
    """``standard_pair(row)``, after checking the row; ValueError naming ``where`` for anything wrong."""
    _check_fields(row, where)
    try:
        pair = standard_pair(row)
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{where}: cannot read the pair ({type(err).__name__}: {err})") from None
    prompt, chosen, rejected = pair["prompt"], pair["chosen"], pair["rejected"]
    if not prompt or (isinstance(prompt, str) and not prompt.strip()):
        raise ValueError(f"{where}: the prompt is empty (no 'prompt' field, or chosen and rejected share no beginning)")
    for field, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise ValueError(f"{where}: the {field} response is empty")
    if chosen.strip() == rejected.strip():
        raise ValueError(f"{where}: chosen and rejected are the same response {chosen.strip()[:60]!r}")
    if tokenizer is not None:
        _check_encodes(pair, where, tokenizer, context)
    return pair


def _check_fields(row: dict, where: str) -> None:
    """'chosen' and 'rejected' (and 'prompt' when given) are both strings or both lists of messages."""
    missing = [field for field in ("chosen", "rejected") if field not in row or row[field] is None]
    if missing:
        raise ValueError(
            f"{where}: missing field {missing[0]!r}; TRL's preference format needs 'chosen' and 'rejected' "
            f"(and optionally 'prompt'); the row has {sorted(row)}"
        )
    for field in ("chosen", "rejected", "prompt"):
        value = row.get(field)
        if field == "prompt" and value is None:
            continue
        if isinstance(value, list):
            check_messages(value, f"{where}: {field!r}")
        elif not isinstance(value, str):
            raise ValueError(f"{where}: {field!r} must be a string or a list of messages, got {type(value).__name__}")
    if isinstance(row["chosen"], list) != isinstance(row["rejected"], list):
        raise ValueError(f"{where}: 'chosen' and 'rejected' must both be strings or both be conversations")


def _check_encodes(pair: dict, where: str, tokenizer, context: int | None) -> None:
    """The pair encodes with ``tokenizer``, and prompt + each response fits ``context`` positions when given."""
    try:
        prompt_ids = encode_prompt(tokenizer, pair["prompt"])
        lengths = {field: len(encode_response(tokenizer, pair[field])) for field in ("chosen", "rejected")}
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{where}: {str(err).replace('prompt 0 ', 'the prompt ').replace('response 0 ', 'the response ')}"
        ) from None
    for field, n in lengths.items():
        if context is not None and len(prompt_ids) + n > context:
            raise ValueError(
                f"{where}: prompt + {field} is {len(prompt_ids) + n} tokens long ({len(prompt_ids)} + {n}, with "
                f"eos), but the model allows {context} positions; shorten or drop this pair"
            )


def standard_pair(row: dict) -> dict:
    """Any of TRL's four preference forms -> ``{"prompt": str | messages, "chosen": str, "rejected": str}``.

    Standard or conversational (lists of messages), with an explicit ``prompt`` or an implicit one (the
    shared beginning of chosen and rejected, as TRL's ``extract_prompt`` finds it).
    """
    chosen, rejected = row["chosen"], row["rejected"]
    prompt = row.get("prompt")
    if prompt is None:  # implicit prompt: the longest shared beginning
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        if isinstance(chosen, str):  # cut at a word boundary, as TRL does for text
            shared = chosen.rfind(" ", 0, shared + 1) if shared < len(chosen) and chosen[shared] != " " else shared
            shared = max(shared, 0)
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    if isinstance(chosen, list):  # conversational: the assistant's reply is the response
        chosen, rejected = (" ".join(m["content"] for m in side) for side in (chosen, rejected))
    return {**row, "prompt": prompt, "chosen": chosen, "rejected": rejected}
