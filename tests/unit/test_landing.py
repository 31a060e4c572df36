import pytest

from llama_assets.base.layout import DataLayout, split_batch_key
from llama_assets.ingest.landing import add_to_landing, landing_batch_keys


def test_ingest_copies_a_folder_atomically_and_refuses_a_second_copy(tmp_path):
    src = tmp_path / "in"
    (src / "nested").mkdir(parents=True)
    (src / "nested" / "a.txt").write_text("alpha")
    landing = tmp_path / "landing"
    key = add_to_landing(src, landing, "wiki", "b1")
    assert key == "wiki/b1"
    assert (landing / "wiki/b1/nested/a.txt").read_text() == "alpha"
    assert [p.name for p in (landing / "wiki").iterdir()] == ["b1"]  # no temp left behind
    with pytest.raises(FileExistsError):
        add_to_landing(src, landing, "wiki", "b1")


def test_batches_are_listed_in_arrival_order_without_hidden_folders(tmp_path):
    for key in ("web/20260102", "wiki/20260101", "web/.20260103.tmp"):
        (tmp_path / key).mkdir(parents=True)
    assert landing_batch_keys(tmp_path) == ["wiki/20260101", "web/20260102"]


@pytest.mark.parametrize("bad", ["..", "a/b", "", ".hidden", "x" * 129, "sp ace"])
def test_bad_source_names_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        add_to_landing(tmp_path, tmp_path / "landing", bad, "b1")


def test_partition_keys_map_to_scoped_paths(tmp_path):
    layout = DataLayout(tmp_path)
    assert split_batch_key("src/b1") == ("src", "b1")
    assert layout.shards("src/b1").local == tmp_path / "shards/src/b1"
    assert layout.quarantine("src/b1").local == tmp_path / "quarantine/src/b1"
    with pytest.raises(ValueError):
        split_batch_key("no-slash")
