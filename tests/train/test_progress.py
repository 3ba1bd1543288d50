from steernpc_train.progress import progress_bar


def test_the_bar_shows_when_stderr_is_a_log_file(capsys):
    # capsys's stderr is not a terminal, like `nohup steernpc train sft ... > log`
    bar = progress_bar(3, "sft", "step")
    bar.update(3)
    bar.close()
    err = capsys.readouterr().err
    assert "sft" in err and "3/3" in err


def test_a_disabled_bar_writes_nothing(capsys):
    bar = progress_bar(3, "sft", "step", enabled=False)
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err == ""
