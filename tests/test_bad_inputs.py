"""Bad input, table-driven: each case is one thing a user can get wrong, with the exception (API) or exit code
(CLI) and the message it must get. A message names the problem (the field, the file, the line) and, where
there is one, the way out. API cases needing no model come first; those on the tiny model share fixtures."""

import json
import shutil

import pytest

from council.cli import jobs_main, main
from council.config import ConfigError, CouncilConfig
from council.retrieval import DocumentError, read_documents


def _config(**kw):
    return CouncilConfig.from_dict(kw)


def _file(folder, name: str, content: str | bytes):
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _from_file(name: str, content: str | bytes):
    return lambda tmp_path: CouncilConfig.from_file(_file(tmp_path, name, content))


def _read(name: str, content: str | bytes, on_error="raise"):
    return lambda tmp_path: read_documents(_file(tmp_path, name, content), on_error=on_error)


def _hosts(**kw):
    from council.hosts import HostsConfig

    return lambda: HostsConfig(**kw)


# ---------------------------------------------------------------------------------------------- API, no model

NO_MODEL = {
    # config values: the field by name, the type or range it wants
    "max_k a string": (lambda: _config(router={"max_k": "3"}), ConfigError,
                       "router.max_k='3': must be a whole number, not str"),
    "max_k a bool": (lambda: _config(router={"max_k": True}), ConfigError,
                     "router.max_k=True: must be a whole number, not bool"),
    "specialists a string": (lambda: _config(specialists="history"), ConfigError,
                             "specialists='history': must be a list, each a string or none, not str"),
    "unknown key": (lambda: _config(retrive_k=3), ConfigError,
                    "unknown config key(s) ['retrive_k']; known: ['base_model'"),
    "unknown router key": (lambda: _config(router={"maxk": 3}), ConfigError,
                           "unknown router config key(s) ['maxk']; known: ['threshold'"),
    "min_k above max_k": (lambda: _config(router={"min_k": 4, "max_k": 2}), ConfigError,
                          "router.min_k=4, max_k=2: need 0 <= min_k <= max_k"),
    "route threshold": (lambda: _config(router={"threshold": 2.0}), ConfigError,
                        "router.threshold=2.0: a cosine score, must be between -1 and 1"),
    "context_tokens": (lambda: _config(context_tokens=-1), ConfigError,
                       "context_tokens=-1: must be a whole number of at least 1"),
    "max_new_tokens": (lambda: _config(max_new_tokens=0), ConfigError,
                       "max_new_tokens=0: must be a whole number of at least 1"),
    "overlong policy": (lambda: _config(overlong="shout"), ConfigError,
                        "overlong='shout': must be one of 'error', 'truncate', not str"),
    "fallback": (lambda: _config(fallback="guess"), ConfigError,
                 "fallback='guess': must be one of 'base', 'abstain', not str"),
    "quantize": (lambda: _config(quantize="int3"), ConfigError,
                 "quantize='int3': must be one of 'none', 'fp16', 'int8', not str"),
    "threads": (lambda: _config(threads=0), ConfigError, "threads=0: must be at least 1"),
    "aggregator range": (lambda: _config(aggregator={"min_agreement": 7}), ConfigError,
                         "aggregator.min_agreement=7: must be a number between 0 and 1"),
    "hosts n_hosts": (_hosts(n_hosts=0), ValueError, "hosts.n_hosts=0: must be a whole number of at least 1"),
    "hosts num_cpus": (_hosts(num_cpus=0), ValueError, "hosts.num_cpus=0: must be a number above 0, or None"),
    "hosts deadline": (_hosts(deadline_s=-1), ValueError,
                       "hosts.deadline_s=-1: must be a number of seconds above 0, or None"),
    "hosts restarts": (_hosts(restarts=-2), ValueError, "hosts.restarts=-2: must be a whole number >= 0"),
    "hosts n_hosts, one host": (_hosts(n_hosts=2), ValueError,
                                "hosts.n_hosts=2 with placement='single': n_hosts is read by the 'spread' placement"),
    "hosts mode": (_hosts(mode="cloud"), ValueError, "hosts.mode='cloud': must be one of 'inprocess', 'ray'"),
    # config files
    "config missing": (lambda tmp_path: CouncilConfig.from_file(tmp_path / "nope.toml"), ConfigError,
                       "nope.toml does not exist"),
    "config TOML corrupt": (_from_file("c.toml", "[router\nmax_k = 3"), ConfigError,
                            "c.toml: cannot be parsed as TOML (Expected ']'"),
    "config JSON corrupt": (_from_file("c.json", '{"router": '), ConfigError,
                            "c.json: cannot be parsed as JSON (Expecting value: line 1 column 12"),
    "config JSON a list": (_from_file("c.json", "[1, 2]"), ConfigError,
                           "c.json: the top level must be an object of settings"),
    "config suffix": (_from_file("c.yaml", "router: {}"), ConfigError,
                      "c.yaml: a config file is .toml or .json, not .yaml"),
    "config not UTF-8": (_from_file("c.toml", b"\xff\xfe"), ConfigError,
                         "c.toml: cannot be parsed as TOML ('utf-8' codec can't decode byte 0xff"),
    "config type in a file": (_from_file("c.toml", '[router]\nmax_k = "3"\n'), ConfigError,
                              "c.toml: router.max_k='3': must be a whole number, not str"),
    # documents
    "document missing": (lambda tmp_path: read_documents(tmp_path / "gone.md"), FileNotFoundError,
                         "gone.md: no such file or folder"),
    "document not UTF-8": (_read("l.txt", "caf\xe9".encode("latin-1")), DocumentError,
                           "l.txt: not UTF-8 text (byte 0xe9 at offset 3); re-save it as UTF-8"),
    "document of NUL bytes": (_read("n.txt", b"\0\0\0\0"), DocumentError,
                              "n.txt: holds NUL bytes (at offset 0): a binary file, not text"),
    "document empty": (_read("e.txt", "  \n"), DocumentError, "e.txt: empty document"),
    "JSONL bad line": (_read("d.jsonl", '{"text": "ok"}\n{not json}\n'), DocumentError,
                       "d.jsonl:2: invalid JSON (Expecting property name"),
    "JSONL without text": (_read("d.jsonl", '{"title": "t"}\n'), DocumentError,
                           "d.jsonl:1: expected an object with a string 'text' field"),
    "document format": (_read("d.pdf", b"%PDF"), DocumentError,
                        "d.pdf: unsupported file type '.pdf'; supported: ['.txt', '.md', '.jsonl', '.json']"),
    "JSON not SQuAD": (_read("d.json", '{"rows": []}'), DocumentError,
                       "d.json: not SQuAD-format JSON (expected an object with a 'data' list of articles)"),
    "on_error": (_read("a.txt", "x", on_error="ignore"), ValueError, "on_error='ignore': choose 'warn' or 'raise'"),
}


@pytest.mark.parametrize("case", NO_MODEL)
def test_api_refuses_bad_input_by_name(case, tmp_path):
    call, error, message = NO_MODEL[case]
    with pytest.raises(error) as caught:
        call(tmp_path) if call.__code__.co_argcount else call()
    assert message in str(caught.value)


# ---------------------------------------------------------------------------------------------- API, tiny model


@pytest.fixture(scope="module")
def council(tiny_model_dir, tiny_catalog):
    from council.council import Council
    from tests.conftest import HashEmbedder, make_store

    c = Council(CouncilConfig(base_model=str(tiny_model_dir), catalog=str(tiny_catalog), quantize="none",
                              max_new_tokens=4, max_question_chars=200),
                store=make_store(), embedder=HashEmbedder())
    yield c
    c.close()


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from council import base_model
    from council.engine import Engine

    return Engine(base_model.load(tiny_model_dir))


def _adapter(tmp_path, tiny_adapters, edit):
    folder = tmp_path / "adapter"
    shutil.copytree(tiny_adapters["law"], folder)
    edit(folder)
    return folder


def _other_base_adapter(tmp_path, tiny_adapters):
    from tests.conftest import build_tiny_model, make_lora

    return make_lora(build_tiny_model(tmp_path / "wide", hidden=96), tmp_path / "wide_lora", seed=5)


def _catalog(tmp_path, tiny_catalog, edit):
    from specialists.registry import load_catalog

    root = tmp_path / "catalog"
    shutil.copytree(tiny_catalog, root)
    edit(root)
    return load_catalog(root)


def _rename_card(root, name):
    card = json.loads((root / "law" / "specialist.json").read_text())
    (root / "law" / "specialist.json").write_text(json.dumps({**card, "name": name}))


def _seat(tiny_model_dir, tiny_catalog, **kw):
    from council.council import Council
    from tests.conftest import HashEmbedder, make_store

    return Council(CouncilConfig(base_model=str(tiny_model_dir), catalog=str(tiny_catalog), quantize="none", **kw),
                   store=make_store(), embedder=HashEmbedder())


def _no_safetensors(tmp_path, tiny_model_dir):
    from council import base_model

    folder = tmp_path / "bin_model"
    shutil.copytree(tiny_model_dir, folder)
    for f in folder.glob("*.safetensors"):
        f.rename(f.with_name("pytorch_model.bin"))
    return base_model.load(folder)


def _store_tampered(tmp_path, edit):
    from council.retrieval import DocumentStore
    from tests.conftest import HashEmbedder, make_store

    make_store().save(tmp_path / "store")
    edit(tmp_path / "store")
    return DocumentStore.load(tmp_path / "store", embedder=HashEmbedder())


# each: fixtures -> call; the fixtures are given by name, so a case asks only for what it needs
WITH_MODEL = {
    "empty question": (lambda council: council.ask(""), ValueError, "the question is empty: ask something"),
    "blank question": (lambda council: council.ask(" \n\t "), ValueError, "the question is empty"),
    "oversized question": (lambda council: council.ask("why " * 60), ValueError,
                           "the question has 239 characters, more than max_question_chars=200: shorten it, "
                           "or set overlong='truncate'"),
    "question not text": (lambda council: council.ask(42), ValueError, "the question must be text, got int"),
    "one bad question of many": (lambda council: council.ask_many(["What is force?", ""]), ValueError,
                                 "the question is empty"),
    "question not UTF-8": (lambda council: council.ask("caf\udce9?"), ValueError,
                           "the question is not valid UTF-8 text (byte 3): re-encode it as UTF-8"),
    "unknown specialist": (lambda tiny_model_dir, tiny_catalog: _seat(tiny_model_dir, tiny_catalog,
                                                                      specialists=["histroy"]),
                           KeyError, "unknown specialist 'histroy'; known: history, law, science"),
    "catalog missing": (lambda tiny_model_dir, tmp_path: _seat(tiny_model_dir, tmp_path / "none"), ConfigError,
                        "none': no such folder of specialists"),
    "base model missing": (lambda tiny_catalog, tmp_path: _seat(tmp_path / "nowhere", tiny_catalog),
                           FileNotFoundError, "nowhere' not found: it is not a local folder"),
    "base model without safetensors": (_no_safetensors, FileNotFoundError,
                                       "holds no *.safetensors weights: council loads only safetensors"),
    "adapter folder missing": (lambda engine, tmp_path: engine.load_adapter("x", tmp_path / "gone"),
                               ValueError, "adapter 'x': folder "),
    "adapter config corrupt": (lambda engine, tmp_path, tiny_adapters: engine.load_adapter("x", _adapter(
        tmp_path, tiny_adapters, lambda f: (f / "adapter_config.json").write_text("{oops"))), ValueError,
        "adapter_config.json is not valid JSON (Expecting property name"),
    "adapter weights corrupt": (lambda engine, tmp_path, tiny_adapters: engine.load_adapter("x", _adapter(
        tmp_path, tiny_adapters, lambda f: (f / "adapter_model.safetensors").write_bytes(b"\0" * 64))), ValueError,
        "adapter_model.safetensors is corrupt or not safetensors (Error while deserializing header"),
    "adapter in pickle format": (lambda engine, tmp_path, tiny_adapters: engine.load_adapter("x", _adapter(
        tmp_path, tiny_adapters, lambda f: (f / "adapter_model.safetensors").rename(f / "adapter_model.bin"))),
        ValueError, "holds no adapter_model.safetensors but adapter_model.bin, a pickle, which council never loads"),
    "adapter of another base (shapes)": (lambda engine, tmp_path, tiny_adapters: engine.load_adapter(
        "x", _other_base_adapter(tmp_path, tiny_adapters)), ValueError,
        "adapter 'x' was made for another base model: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight "
        "has shape [4, 96]"),
    "adapter of another base (fingerprint)": (lambda engine, tiny_adapters: engine.load_adapter(
        "x", tiny_adapters["law"], base_fingerprint="0123abcd"), ValueError,
        "was trained on a base model with fingerprint 0123abcd"),
    "adapter name": (lambda engine, tiny_adapters: engine.load_adapter("a", tiny_adapters["law"]), ValueError,
                     "adapter name 'a' is reserved by peft: choose another name"),
    "card name not an adapter name": (lambda tmp_path, tiny_catalog: _catalog(
        tmp_path, tiny_catalog, lambda root: _rename_card(root, "la w")), ValueError,
        "law/specialist.json: name 'la w' cannot name an adapter (adapter name 'la w' is not valid: use 1-64 letters"),
    "card JSON corrupt": (lambda tmp_path, tiny_catalog: _catalog(tmp_path, tiny_catalog, lambda root: (
        root / "law" / "specialist.json").write_text("{")), ValueError,
        "law/specialist.json: not valid JSON (Expecting property name"),
    "store file missing": (lambda tmp_path: _store_tampered(tmp_path, lambda f: (f / "passages.jsonl").unlink()),
                           ValueError, "passages.jsonl: missing; the store folder is incomplete, rebuild it"),
    "store file corrupt": (lambda tmp_path: _store_tampered(
        tmp_path, lambda f: (f / "passages.jsonl").write_text("{}\n")), ValueError,
        "passages.jsonl: checksum differs from manifest.json; the file is corrupt, rebuild the store"),
}


@pytest.mark.parametrize("case", WITH_MODEL)
def test_api_refuses_bad_input_on_the_tiny_model(case, request):
    call, error, message = WITH_MODEL[case]
    args = [request.getfixturevalue(n) for n in call.__code__.co_varnames[:call.__code__.co_argcount]]
    with pytest.raises(error) as caught:
        call(*args)
    assert message in str(caught.value)


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_config(tiny_model_dir, tiny_catalog, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps({"base_model": str(tiny_model_dir), "catalog": str(tiny_catalog),
                                "quantize": "none"}))
    return path


def _questions(tmp_path):
    return _file(tmp_path, "q.jsonl", '{"id": "1", "question": "What is force?"}\n')


CLI = {
    # argv (formatted with tmp, questions, config) -> exit code, a piece of stderr
    "ask, empty": (["ask", ""], 2, "council ask: the question is empty: ask something"),
    "ask, oversized": (["ask", "x" * 1001], 2, "the question has 1001 characters, more than max_question_chars=1000"),
    "ask, no question": (["ask"], 2, "the following arguments are required: question"),
    "ask, threads 0": (["ask", "q?", "--threads", "0"], 2, "argument --threads: 0: must be at least 1"),
    "ask, specialists ','": (["ask", "q?", "--specialists", ","], 2, "argument --specialists"),
    "ask, config missing": (["ask", "q?", "--config", "{tmp}/none.toml"], 2, "none.toml does not exist"),
    "ask, config with a type error": (["ask", "q?", "--config", "{bad_config}"], 2,
                                      "bad.toml: router.max_k='3': must be a whole number, not str"),
    "ask, model missing": (["ask", "q?", "--model", "{tmp}/nomodel"], 2, "nomodel' not found"),
    "ask, unknown specialist": (["ask", "q?", "--config", "{config}", "--specialists", "histroy"], 2,
                                "unknown specialist 'histroy'; known: history, law, science"),
    "ask, unknown command": (["answer", "q?"], 2, "invalid choice: 'answer'"),
    "index, missing file": (["index", "{tmp}/gone.md", "--store", "{tmp}/s"], 2, "gone.md: no such file or folder"),
    "index, strict, bad file": (["index", "{bad_doc}", "--store", "{tmp}/s", "--strict"], 2,
                                "bad.txt: not UTF-8 text"),
    "specialists, catalog missing": (["specialists", "--catalog", "{tmp}/nocat"], 2,
                                     "nocat does not exist (or is not a folder)"),
    "jobs, output is input": (["answer", "--input", "{questions}", "--output", "{questions}", "--local"], 2,
                              "is the input file: choose another file for the verdicts"),
    "jobs, input missing": (["answer", "--input", "{tmp}/none.jsonl", "--output", "{tmp}/v.jsonl", "--local"], 2,
                            "none.jsonl"),
    "jobs, batch 0": (["answer", "--input", "{questions}", "--output", "{tmp}/v.jsonl", "--batch", "0"], 2,
                      "argument --batch: 0: must be at least 1"),
    "jobs, foreign output": (["answer", "--input", "{questions}", "--output", "{foreign}", "--local"], 2,
                             "notes.txt"),
    "jobs, cpus 0": (["answer", "--input", "{questions}", "--output", "{tmp}/v.jsonl", "--cpus-per-host", "0"], 2,
                     "argument --cpus-per-host: 0: must be above 0"),
    "jobs, threads a word": (["answer", "--input", "{questions}", "--output", "{tmp}/v.jsonl", "--hosts", "two"], 2,
                             "argument --hosts: 'two': must be a whole number"),
    "jobs, config corrupt": (["answer", "--input", "{questions}", "--output", "{tmp}/v.jsonl", "--config",
                              "{corrupt_config}", "--local"], 2, "corrupt.json: cannot be parsed as JSON"),
}


@pytest.mark.parametrize("case", CLI)
def test_cli_exits_with_a_message(case, tmp_path, tiny_config, capsys):
    argv, code, message = CLI[case]
    names = {"tmp": tmp_path, "config": tiny_config, "questions": _questions(tmp_path),
             "bad_config": _file(tmp_path, "bad.toml", '[router]\nmax_k = "3"\n'),
             "corrupt_config": _file(tmp_path, "corrupt.json", "{"),
             "bad_doc": _file(tmp_path, "bad.txt", b"caf\xe9"),
             "foreign": _file(tmp_path, "notes.txt", "my notes\nnot verdicts\n")}
    argv = [a.format(**names) for a in argv]
    run = jobs_main if case.startswith("jobs") else main
    try:
        got = run(argv)
    except SystemExit as e:  # argparse's own refusals
        got = e.code
    err = capsys.readouterr().err
    assert got == code and message in err, err
    assert "Traceback" not in err
    if case == "jobs, foreign output":
        assert (tmp_path / "notes.txt").read_text() == "my notes\nnot verdicts\n"  # a user's file is never touched
