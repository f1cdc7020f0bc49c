from hoopctl.detect.exposure import adjust_severity, exposure_reasons, raise_severity


def test_private_file_outside_shared_dirs_keeps_its_severity():
    assert adjust_severity("medium", 0o100600, False) == ("medium", ())


def test_world_readable_file_is_raised_one_step():
    assert adjust_severity("medium", 0o100644, False) == ("high", ("world-readable",))


def test_group_readable_counts_as_exposed():
    assert exposure_reasons(0o100640, False) == ("group-readable",)


def test_world_readable_file_in_shared_dir_is_raised_two_steps_and_capped():
    assert adjust_severity("low", 0o100644, True) == ("high", ("world-readable", "shared-dir"))
    assert adjust_severity("high", 0o100666, True)[0] == "critical"


def test_unknown_severity_is_left_alone():
    assert raise_severity("weird", 2) == "weird"
