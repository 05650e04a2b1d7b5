"""The store's file names (cellclr.store.format)."""

from cellclr.store.format import plate_file_stem


def test_plate_file_names_are_distinct_and_safe():
    names = ["Plate A", "Plate_A", "Plate/A", "Wäche1_1", "Wüche1_1", "..", ".", "", "a" * 300]
    stems = [plate_file_stem(n) for n in names]
    assert len(set(stems)) == len(names) and len({s.lower() for s in stems}) == len(names)
    assert all(s and not s.startswith(".") and "/" not in s and len(s) < 80 for s in stems)
    assert plate_file_stem("Week1_22123").startswith("Week1_22123-")  # still readable
