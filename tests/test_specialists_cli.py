from specialists.__main__ import main


def test_evaluate_names_what_is_wrong(capsys):
    assert main(["evaluate", "nope"]) == 2
    assert "unknown specialist 'nope'; known:" in capsys.readouterr().err
    assert main(["evaluate", "fiction_orrune"]) == 2  # synthetic: no SQuAD held-out split
    assert "held-out splits exist for SQuAD ones" in capsys.readouterr().err


def test_list_prints_every_catalog_specialist(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("history", "economics", "fiction_orrune"))
