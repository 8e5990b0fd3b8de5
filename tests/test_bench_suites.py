"""Suite loaders on the real GenEval / T2I-CompBench files, a WISE fixture, and bad input."""

from __future__ import annotations

import json

import pytest

from milr.bench.suites import GENEVAL_TAGS, T2I_CATEGORIES, WISE_WEIGHTS, load_suite, wise_category
from milr.errors import MilrUserError

WISE_ITEMS = [
    {
        "prompt_id": 1,
        "Prompt": "Traditional food of the Mid-Autumn Festival",
        "Explanation": "mooncakes",
        "Category": "Cultural knowledge",
        "Subcategory": "Festival",
    },
    {
        "prompt_id": 402,
        "Prompt": "The sky over a city at 3 a.m.",
        "Explanation": "dark night sky",
        "Category": "Spatio-temporal reasoning",
        "Subcategory": "Longitudinal time",
    },
    {
        "prompt_id": 600,
        "Prompt": "The view from the top of Mount Everest looking down",
        "Explanation": "clouds below",
        "Category": "Spatio-temporal reasoning",
        "Subcategory": "Different perspectives",
    },
    {
        "prompt_id": 705,
        "Prompt": "A caterpillar after metamorphosis",
        "Explanation": "a butterfly",
        "Category": "Natural science",
        "Subcategory": "Biology: state",
    },
    {
        "prompt_id": 850,
        "Prompt": "A straw in a glass of water",
        "Explanation": "bent by refraction",
        "Category": "Natural science",
        "Subcategory": "Optics",
    },
    {
        "prompt_id": 950,
        "Prompt": "An iron nail left in the rain for months",
        "Explanation": "rusty",
        "Category": "Chemistry",
        "Subcategory": "Metal corrosion",
    },
]


def test_geneval_real_metadata(shared_data):
    suite = load_suite(shared_data / "geneval" / "evaluation_metadata.jsonl")
    assert suite.format == "geneval" and len(suite) == 553
    assert suite.groups == list(GENEVAL_TAGS)
    first = suite.prompts[0]
    assert first.id == "00000" and first.prompt == "a photo of a bench"
    assert first.metadata["include"] == [{"class": "bench", "count": 1}]
    assert len({p.id for p in suite.prompts}) == 553
    again = load_suite(shared_data / "geneval" / "evaluation_metadata.jsonl")
    assert again.content_sha256 == suite.content_sha256


def test_t2i_compbench_file_and_directory(shared_data):
    color = load_suite(shared_data / "t2i-compbench" / "color_val.txt")
    assert color.format == "t2i-compbench" and color.groups == ["color"]
    assert color.prompts[0].prompt == "a green bench and a blue bowl"
    assert color.prompts[0].id == "color_00000" and len(color) == 300
    everything = load_suite(shared_data / "t2i-compbench")
    assert everything.groups == list(T2I_CATEGORIES)
    assert len(everything) == sum(
        len([ln for ln in f.read_text().splitlines() if ln.strip()])
        for f in (shared_data / "t2i-compbench").glob("*_val.txt")
    )


def test_wise_json_fixture(tmp_path):
    path = tmp_path / "wise.json"
    path.write_text(json.dumps(WISE_ITEMS))
    suite = load_suite(path)
    assert suite.format == "wise"
    assert [p.group for p in suite.prompts] == list(WISE_WEIGHTS)
    assert suite.prompts[1].id == "402"
    assert suite.prompts[0].metadata["Explanation"] == "mooncakes"  # judges read it
    assert sum(WISE_WEIGHTS.values()) == pytest.approx(1.0)


def test_wise_category_falls_back_to_official_id_ranges():
    assert wise_category("Natural science", "State", 720) == "Biology"
    assert wise_category("Spatio-temporal reasoning", "Geographical location", 650) == "Space"
    assert wise_category("cultural knowledge", "Art", 3) == "Cultural"
    with pytest.raises(ValueError, match="outside 1-1000"):
        wise_category("Misc", "Other", 5000)


def test_shapeseval_detected(tmp_path):
    from milr.shapes.evalset import write_shapeseval

    path = write_shapeseval(tmp_path / "my-prompts.jsonl", per_tag=2)
    suite = load_suite(path)
    assert suite.format == "shapes" and len(suite) == 12 and len(suite.groups) == 6


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("empty.jsonl", "", "is empty"),
        ("blank.json", "  \n\n", "is empty"),
        (
            "bad.jsonl",
            '{"tag": "counting", "include": [{"class": "dog", "count": 2}], "prompt": "two dogs"}\n{oops\n',
            r"bad.jsonl:2: line is not JSON",
        ),
        (
            "nocount.jsonl",
            '{"tag": "counting", "include": [{"class": "dog", "count": 0}], "prompt": "x"}\n',
            r"nocount.jsonl:1: GenEval metadata field include\[0\].count must be an integer >= 1",
        ),
        (
            "noprompt.jsonl",
            '{"tag": "colors", "include": [{"class": "dog"}]}\n',
            r"noprompt.jsonl:1: field 'prompt'",
        ),
        (
            "notag.jsonl",
            '{"include": [{"class": "dog"}], "prompt": "a dog"}\n',
            r"notag.jsonl:1: field 'tag'",
        ),
        (
            "pos.jsonl",
            '{"tag": "position", "include": [{"class": "dog", "count": 1, "position": "left"}], "prompt": "p"}\n',
            r"pos.jsonl:1: GenEval metadata field include\[0\].position must be \[relation, clause_index\]",
        ),
        (
            "missing_count.jsonl",
            '{"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a"}\n'
            '{"tag": "single_object", "include": [{"class": "cat"}], "prompt": "a cat"}\n',
            r"missing_count.jsonl:2: GenEval metadata field include\[0\].count is missing",
        ),
        (
            "colour.jsonl",
            '{"tag": "colors", "include": [{"class": "dog", "count": 1, "colour": "red"}], '
            '"prompt": "a red dog"}\n',
            r"colour.jsonl:1: GenEval metadata field include\[0\] has unknown key\(s\) \['colour'\]",
        ),
        (
            "badcolor.jsonl",
            '{"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "mauve"}], '
            '"prompt": "a mauve dog"}\n',
            r"badcolor.jsonl:1: GenEval metadata field include\[0\].color='mauve' is not one of",
        ),
        (
            "badrel.jsonl",
            '{"tag": "position", "include": [{"class": "dog", "count": 1}, '
            '{"class": "cat", "count": 1, "position": ["behind", 0]}], "prompt": "p"}\n',
            r"badrel.jsonl:1: GenEval metadata field include\[1\].position\[0\]='behind'",
        ),
        (
            "exclude_color.jsonl",
            '{"tag": "counting", "include": [{"class": "dog", "count": 1}], '
            '"exclude": [{"class": "dog", "count": 2, "color": "red"}], "prompt": "p"}\n',
            r"exclude_color.jsonl:1: GenEval metadata field exclude\[0\] has unknown key",
        ),
        (
            "wise.json",
            json.dumps(
                [{"prompt_id": 3, "Prompt": "x", "Category": "Cultural", "Subcategory": "y"}]
            ),
            r"item 0 \(prompt_id 3\): missing field\(s\) 'Explanation'",
        ),
        ("wise2.json", json.dumps({"Prompt": "x"}), "expected a JSON list"),
        ("wise3.json", '[{"prompt_id": 1,', r"wise3.json:1: file is not JSON"),
        (
            "wise4.json",
            json.dumps([{**WISE_ITEMS[0], "prompt_id": "one"}]),
            "field 'prompt_id' must be an integer",
        ),
        ("foo_val.txt", "a dog\n", "cannot tell the T2I-CompBench category"),
        ("color_val.txt", '{"prompt": "a dog"}\n', r"color_val.txt:1: looks like JSON"),
        ("data.csv", "prompt,tag\na dog,single\n", "unknown suite format"),
        ("wise_as.jsonl", json.dumps(WISE_ITEMS[0]) + "\n", "looks like a WISE record"),
    ],
)
def test_bad_suite_files_name_line_and_field(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(MilrUserError, match=match):
        load_suite(path)


def test_missing_file_duplicate_ids_and_bad_format(tmp_path):
    with pytest.raises(MilrUserError, match="does not exist"):
        load_suite(tmp_path / "nope.jsonl")
    with pytest.raises(MilrUserError, match="unknown suite format 'parti'"):
        load_suite(tmp_path / "nope.jsonl", format="parti")
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps([WISE_ITEMS[0], WISE_ITEMS[0]]))
    with pytest.raises(MilrUserError, match="prompt_id 1 also appears"):
        load_suite(dup)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(MilrUserError, match="not UTF-8"):
        load_suite(binary)


def test_a_bad_geneval_line_stops_the_bench_before_any_generation(tmp_path):
    """The suite is checked with the rules engine's schema before a solver is even built."""
    from milr.bench.runner import BenchOptions, run_bench

    suite = tmp_path / "suite.jsonl"
    suite.write_text(
        '{"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a dog"}\n'
        '{"tag": "colors", "include": [{"class": "dog", "count": 1, "colour": "red"}], '
        '"prompt": "a red dog"}\n'
    )
    built = []

    def factory(opts, device):
        built.append(opts)
        raise AssertionError("the solver must not be built for a bad suite")

    out = tmp_path / "run"
    opts = BenchOptions(suite=str(suite), critic=["color"], out=str(out), progress=False)
    with pytest.raises(MilrUserError, match=r"suite.jsonl:2: .*include\[0\].*'colour'"):
        run_bench(opts, solver_factory=factory)
    assert built == [] and not (out / "images").exists() and not (out / "records").exists()
