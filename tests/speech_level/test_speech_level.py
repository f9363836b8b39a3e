"""Speech level toolkit: labels on hand-labelled data, what is ignored, the converters and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eeve_sft import speech_level as sl

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
CLI = REPO / "data_prep" / "speech_level.py"
CONTENT_TAGS = {"NNG", "NNP", "NR", "SL", "SN", "VV", "VA", "XR"}


def load(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def sentences() -> list[dict]:
    return load("speech_level_sentences.jsonl")


@pytest.fixture(scope="module")
def answers() -> list[dict]:
    return load("speech_level_answers.jsonl")


@pytest.fixture(scope="module")
def kiwi():
    return sl.get_kiwi()


def content_words(kiwi, text: str) -> list[tuple[str, str]]:
    """Content morphemes (form, tag): nouns, numbers, foreign words, verb and adjective stems, roots."""
    return [(tok.form, tok.tag.split("-")[0]) for tok in kiwi.tokenize(text) if tok.tag.split("-")[0] in CONTENT_TAGS]


def lost_words(kiwi, source: str, converted: str) -> list[tuple[str, str]]:
    """Content morphemes of `source` missing from the analysis of `converted`.

    Kiwi may read an unchanged word differently once its ending changes (요즘 NNG/MAG, 충분/XR + 하 vs
    충분하/VA, 짧아지/VV vs 짧/VA + 지/VX), so tags are not compared, and a verb or adjective stem or a
    root also counts as kept when it and a stem or root of the rewrite extend one another.
    """
    forms = {tok.form for tok in kiwi.tokenize(converted)}
    stems = [form for form, tag in content_words(kiwi, converted) if tag in ("VV", "VA", "XR")]
    lost = []
    for form, tag in content_words(kiwi, source):
        if form in forms:
            continue
        if tag in ("VV", "VA", "XR") and any(s.startswith(form) or form.startswith(s) for s in stems):
            continue
        lost.append((form, tag))
    return lost


def accuracy(rows: list[dict]) -> tuple[float, list[str]]:
    predicted = sl.classify_batch([r["text"] for r in rows])
    misses = [f"{r['label']} -> {p}: {r['text']!r}" for r, p in zip(rows, predicted, strict=True) if p != r["label"]]
    return 1 - len(misses) / len(rows), misses


# --------------------------------------------------------------------------- the labelled data


def test_labelled_data_covers_every_label(sentences, answers):
    labels = [r["label"] for r in sentences]
    assert len(sentences) >= 380 and set(labels) == set(sl.LABELS)
    assert labels.count(sl.POLITE) >= 80 and labels.count(sl.BANMAL) >= 100
    assert labels.count(sl.NEUTRAL) >= 40 and labels.count(sl.MIXED) >= 30
    assert sum(bool(r.get("banmal_ok")) for r in sentences) >= 60
    assert all(r["label"] == sl.POLITE for r in sentences if r.get("banmal_ok"))
    assert len(answers) >= 50 and {r["label"] for r in answers} == set(sl.LABELS)
    texts = [r["text"] for r in sentences]
    assert len(set(texts)) == len(texts)


def test_sentence_accuracy(sentences):
    acc, misses = accuracy(sentences)
    print(f"sentences: {acc:.2%}", *misses, sep="\n  ")
    assert acc >= 0.99, misses


def test_answer_accuracy(answers):
    acc, misses = accuracy(answers)
    print(f"answers: {acc:.2%}", *misses, sep="\n  ")
    assert acc >= 0.99, misses


def test_batch_gives_the_same_labels_as_one_by_one(sentences, answers):
    texts = [r["text"] for r in sentences + answers]
    sl._tail_cache.clear()  # analyse afresh both ways rather than read back the other's cached tails
    singles = [sl.classify(t) for t in texts]
    sl._tail_cache.clear()
    assert sl.classify_batch(texts) == singles
    assert sl.classify_batch(texts, batch_size=7) == singles
    assert sl.classify_batch([]) == []


# --------------------------------------------------------------------------- labelling rules


@pytest.mark.parametrize(
    "text",
    [
        "할머니께서 오셨어.",
        "선생님이 내일 오신대.",
        "아버지 지금 주무셔",
        "사장님은 회의 중이셔 ㅋㅋ",
        "교수님께서 직접 설명해 주셨다.",
        "할아버지 진지 드셨니?",
    ],
)
def test_subject_honorific_does_not_make_banmal_polite(text):
    assert sl.classify(text) == sl.BANMAL


@pytest.mark.parametrize(
    "text",
    [
        "대한민국의 수도, 서울.",
        "사과, 배, 포도",
        "2024년 3월 15일",
        "print(sum(xs))",
        "회의 취소됨.",
        "😂😂",
        "",
        "   \n\n ",
        "OK, sounds good.",
        "## 왜 파이썬일까?",
    ],
)
def test_no_sentence_final_predicate_is_neutral(text):
    assert sl.classify(text) == sl.NEUTRAL


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("서울입니다", sl.POLITE),
        ("맞아요", sl.POLITE),
        ("그래서요?", sl.POLITE),
        ("커피요, 따뜻한 걸로요.", sl.POLITE),
        ("네.", sl.POLITE),
        ("응.", sl.BANMAL),
        ("진짜?", sl.BANMAL),
        ("비가 와서.", sl.BANMAL),
        ("주의하시오.", sl.POLITE),
        ("오늘 진짜 좋다!! 😆", sl.BANMAL),
        ("deploy 끝났어", sl.BANMAL),
        ("이번 주말에 먹을까 해요.", sl.POLITE),
    ],
)
def test_sentence_endings(text, label):
    assert sl.classify(text) == label


@pytest.mark.parametrize(
    "text",
    [
        "알겠어. 내일 뵐게요.",
        "잘 모르겠어 그래도 해 볼게요",  # no punctuation between the two sentences
        "그거 내가 할게, 선배님은 쉬세요.",
        "1. 물을 끓여.\n2. 면을 넣으세요.",
    ],
)
def test_polite_and_banmal_sentences_together_are_mixed(text):
    assert sl.classify(text) == sl.MIXED


@pytest.mark.parametrize(
    "text",
    [
        '친구가 "밥 먹었어?"라고 물으면 이렇게 답하세요.',
        "“밥 먹었어?”라고 물으면 이렇게 답하세요.",
        "‘응, 먹었어’라고 답하면 됩니다.",
        "「가자」는 반말이라서 손님께는 쓰지 않습니다.",
        "『너 뭐 해?』라는 제목의 책이에요.",
        "'됐어'라는 말은 조금 차갑게 들릴 수 있어요.",
        "코드는 다음과 같습니다.\n```python\nprint('안녕')  # 끝났어\nx = 1  # 이건 반말이야\n```\n실행해 보세요.",
        '`git commit -m "고쳤어"`를 실행하세요.',
        "> 이건 인용한 반말이야\n위 문장은 반말입니다.",
        "설명은 아래에 있습니다.\n```\n덜 닫힌 코드 블록이야\n",
    ],
)
def test_code_and_quotes_do_not_count(text):
    assert sl.classify(text) == sl.POLITE
    assert all(level == sl.POLITE for _, level in sl.sentence_levels(text))


def test_a_text_that_is_only_a_quote_is_judged_by_the_quote():
    assert sl.classify('"밥 먹었어?"') == sl.BANMAL
    assert sl.classify("“식사하셨어요?”") == sl.POLITE


def test_sentence_levels_lists_each_counted_sentence_in_order():
    text = '좋은 질문이에요. 친구에게는 "먹었어?"라고 하면 돼요. 근데 이건 나도 몰라.\n- 사과\n- 배'
    assert sl.sentence_levels(text) == [
        ("좋은 질문이에요.", sl.POLITE),
        ('친구에게는 "⋯"라고 하면 돼요.', sl.POLITE),  # the quotation is shown as "⋯"
        ("근데 이건 나도 몰라.", sl.BANMAL),
    ]


def test_bad_arguments_raise():
    with pytest.raises(TypeError):
        sl.classify(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sl.to_banmal_batch(["좋아요", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        sl.classify_batch(["좋아요"], batch_size=0)


# --------------------------------------------------------------------------- converters


def test_polite_questions_convert_to_banmal_keeping_content_words(sentences, kiwi):
    sources = [r["text"] for r in sentences if r.get("banmal_ok")]
    converted = sl.to_banmal_batch(sources)
    labels = sl.classify_batch(converted)
    misses = []
    for src, out, label in zip(sources, converted, labels, strict=True):
        lost = lost_words(kiwi, src, out)
        if label != sl.BANMAL or lost:
            misses.append(f"{src!r} -> {out!r} [{label}] lost {lost}")
    rate = 1 - len(misses) / len(sources)
    print(f"to_banmal: {rate:.2%}", *misses, sep="\n  ")
    assert rate >= 0.95, misses


@pytest.mark.parametrize(
    ("polite", "banmal"),
    [
        ("어디예요?", "어디야?"),
        ("설명해 주세요", "설명해 줘"),
        ("알려주실 수 있나요?", "알려줄 수 있어?"),
        ("뭐가 좋을까요?", "뭐가 좋을까?"),
        ("지금 가세요?", "지금 가?"),
        ("여기에 서명하십시오.", "여기에 서명해."),
        ("이 길이 맞습니까?", "이 길이 맞아?"),
        ("몇 도입니까?", "몇 도야?"),
        ("추천해 주시겠어요?", "추천해 줄래?"),
        ("제가 뭘 하면 될까요?", "내가 뭘 하면 될까?"),
        ("제 이름은 민수예요.", "내 이름은 민수야."),
        ("저희 집에 오실래요?", "우리 집에 올래?"),
        ("알려 드릴까요?", "알려 줄까?"),
        ("네, 맞아요.", "응, 맞아."),
        ("왜요?", "왜?"),
        ("안녕하세요!", "안녕!"),
        ("혹시 이 노래 아세요?", "혹시 이 노래 알아?"),
        ("할머니께서 오셨어요?", "할머니께서 오셨어?"),  # the honoured third person keeps -시-
        ("선생님께서 내주신 숙제인데 좀 풀어 주시겠어요?", "선생님께서 내주신 숙제인데 좀 풀어 줄래?"),
        ("할머니 댁에 계세요?", "할머니 댁에 계셔?"),
        ("특히 이 부분이 궁금합니다:", "특히 이 부분이 궁금해:"),
        ("Python 3.12 쓰셔도 돼요? 🙏", "Python 3.12 써도 돼? 🙏"),
        ("이미 반말이야", "이미 반말이야"),
        ("no Korean here", "no Korean here"),
    ],
)
def test_to_banmal_examples(polite, banmal):
    assert sl.to_banmal(polite) == banmal


def test_to_banmal_leaves_code_and_quotes_as_written():
    text = '`print("완료했습니다")`를 실행해 주세요. 화면에 "끝났습니다"라고 나오나요?\n```\n# 주석입니다\n```'
    assert sl.to_banmal(text) == (
        '`print("완료했습니다")`를 실행해 줘. 화면에 "끝났습니다"라고 나와?\n```\n# 주석입니다\n```'
    )


def test_banmal_converts_to_polite_keeping_content_words(sentences, kiwi):
    sources = [r["text"] for r in sentences if r["label"] == sl.BANMAL]
    converted = sl.to_polite_batch(sources)
    labels = sl.classify_batch(converted)
    misses = [
        f"{src!r} -> {out!r} [{label}]"
        for src, out, label in zip(sources, converted, labels, strict=True)
        if label != sl.POLITE or lost_words(kiwi, src, out)
    ]
    rate = 1 - len(misses) / len(sources)
    print(f"to_polite: {rate:.2%}", *misses, sep="\n  ")
    assert rate >= 0.95, misses


@pytest.mark.parametrize(
    ("banmal", "polite"),
    [
        ("밥 먹었어?", "밥 먹었어요?"),
        ("서울은 한국의 수도다.", "서울은 한국의 수도예요."),
        ("정답은 3번이야.", "정답은 3번이에요."),
        ("내가 할게!", "제가 할게요!"),
        ("그거 알지?", "그거 알죠?"),
        ("얼른 자라.", "얼른 자세요."),
        ("같이 가자~", "같이 가요~"),
        ("벌써 12시구나.", "벌써 12시군요."),
        ("비가 와서.", "비가 와서요."),
        ("응, 알았어.", "네, 알았어요."),
        ("엄마 언제 오셔?", "엄마 언제 오세요?"),
        ("이미 존댓말이에요.", "이미 존댓말이에요."),
    ],
)
def test_to_polite_examples(banmal, polite):
    assert sl.to_polite(banmal) == polite


def test_to_polite_repairs_only_the_banmal_sentences_of_an_answer():
    answer = "설치는 간단합니다.\n- 먼저 설치하고\n- 실행하면 끝\n안 되면 다시 해 봐."
    repaired = sl.to_polite(answer)
    assert repaired == "설치는 간단합니다.\n- 먼저 설치하고\n- 실행하면 끝\n안 되면 다시 해 봐요."
    assert sl.classify(answer) == sl.MIXED and sl.classify(repaired) == sl.POLITE


def test_batch_converters_match_one_by_one(sentences):
    texts = [r["text"] for r in sentences[::5]]
    assert sl.to_banmal_batch(texts) == [sl.to_banmal(t) for t in texts]
    assert sl.to_polite_batch(texts) == [sl.to_polite(t) for t in texts]


# --------------------------------------------------------------------------- CLI


def run_cli(*args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLI), *args],
        input=stdin,
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )


def test_cli_classify_labels_lines_and_reports_bad_ones():
    lines = [
        json.dumps({"id": 1, "text": "밥 먹었어?"}, ensure_ascii=False),
        "{not json",
        "[1, 2]",
        json.dumps({"id": 4, "text": 7}),
        json.dumps({"id": 5}),
        "",
        json.dumps({"id": 6, "text": "설명해 주세요."}, ensure_ascii=False),
    ]
    proc = run_cli("classify", "--batch-size", "2", stdin="\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert out[0] == {"id": 1, "text": "밥 먹었어?", "label": "banmal"}
    assert out[1]["line"] == 2 and out[1]["error"].startswith("invalid JSON")
    assert out[2]["line"] == 3 and "object" in out[2]["error"]
    assert out[3]["id"] == 4 and "string" in out[3]["error"] and "label" not in out[3]
    assert out[4]["id"] == 5 and "error" in out[4]
    assert out[5] == {"id": 6, "text": "설명해 주세요.", "label": "polite"}
    assert len(out) == 6 and "밥 먹었어?" in proc.stdout  # UTF-8 written as is, not \\u-escaped
    assert "4 of 6 lines had errors" in proc.stderr


def test_cli_convert_both_ways():
    rows = [{"text": "어디 가세요?"}, {"text": "밥 먹었어?"}]
    stdin = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    to_banmal = run_cli("convert", "--to", "banmal", stdin=stdin)
    to_polite = run_cli("convert", "--to", "polite", stdin=stdin)
    assert to_banmal.returncode == 0 and to_polite.returncode == 0
    assert [json.loads(x)["converted"] for x in to_banmal.stdout.splitlines()] == ["어디 가?", "밥 먹었어?"]
    assert [json.loads(x)["converted"] for x in to_polite.stdout.splitlines()] == ["어디 가세요?", "밥 먹었어요?"]
    assert to_banmal.stderr == ""


@pytest.mark.parametrize(
    "args", [("convert", "--to", "klingon"), ("convert",), (), ("classify", "--batch-size", "0"), ("frobnicate",)]
)
def test_cli_bad_usage_exits_2(args):
    proc = run_cli(*args, stdin="")
    assert proc.returncode == 2
    assert "error" in proc.stderr and "Traceback" not in proc.stderr
