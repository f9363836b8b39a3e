"""Time a full training-set build on a synthetic 200K-row input, every stage included.

    python -m benchmarks.bench_build_dataset                 # 200,000 rows, recorded (see below)
    python -m benchmarks.bench_build_dataset --rows 20000 --no-record     # print only

The input is two local sources written for the run: Korean instruction/answer pairs (instruction/input/output
JSON Lines) and multi-turn chats (a messages column), with answers of varied length (a sentence to a few
thousand characters, lists, code blocks), plus what real data carries: exact and near duplicates, HTML debris,
symbol soup, repeated lines, English answers, 반말 and mixed answers, unreadable lines and missing fields.
The build samples 100,000 rows, rewrites half of the user turns into 반말 and holds out 2,000 for eval.

Timings per stage come from the build's own stats.json; the total is the wall time of the build. A recorded run
writes `benchmarks/results/build_dataset/<date>_cpu/build_dataset.json` and renders the newest result into its
block of RESULTS.md (`python -m benchmarks.render_results --write` does the same for every block).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import (
    REPO,
    RESULTS_MD,
    RESULTS_ROOT,
    machine,
    newest_result,
    versions,
    write_block,
    write_result,
)
from eeve_sft.data_prep import build_dataset, load_mix

BEGIN = "<!-- bench_build_dataset: begin -->"
END = "<!-- bench_build_dataset: end -->"
LIMIT_S = 600.0

TOPICS = (
    "파이썬 프로그래밍 데이터 분석 김치찌개 된장국 비빔밥 운동 습관 수면 관리 해외여행 국내 여행 독서 "
    "환율 인공지능 기후 변화 스마트폰 커피 등산 재테크 영어 공부 취업 면접 글쓰기 반려견 다이어트 "
    "시간 관리 스트레스 명상 요가 자전거 캠핑 사진 촬영 피아노 기타 연주 한국사 세계사 경제 뉴스 "
    "주식 투자 부동산 자동차 정비 전기차 태양광 재활용 환경 보호 육아 초등 교육 대학 입시 코딩 테스트 "
    "웹 개발 데이터베이스 클라우드 보안 네트워크 운영체제 알고리즘 머신러닝 통계 미적분 물리학 화학 "
    "생물학 천문학 지구과학 심리학 철학 미술사 음악 이론 영화 감상 드라마 웹툰 게임 축구 야구 농구 "
    "수영 마라톤 등산화 겨울 옷차림 여름 휴가 장마철 건강 감기 예방 비타민 식단 관리 채식 제빵 "
    "커피 추출 와인 전통주 차 문화 정원 가꾸기 실내 식물 이사 준비 인테리어 청소 요령 세탁 방법 "
    "가계부 보험 연말정산 세금 신고 창업 마케팅 브랜딩 협상 발표 회의 진행 이메일 작성 보고서 작성 "
    "번역 외국어 학습 일본어 중국어 맞춤법 띄어쓰기 토론 리더십 팀워크 갈등 해결 자기소개서"
).split()
MODIFIERS = (
    "처음",
    "꾸준히",
    "조금씩",
    "천천히",
    "자주",
    "가끔",
    "미리",
    "충분히",
    "반드시",
    "편하게",
    "무리하지 않고",
    "하루에 한 번",
)
NUMBERS = ("세", "네", "다섯", "두", "여러")

# (존댓말, 반말) sentence pairs. {t} is the topic; {t:을} adds the right particle; {m} a modifier; {n} a count.
SENTENCES = [
    ("{t:은} 생각보다 어렵지 않습니다.", "{t:은} 생각보다 어렵지 않아."),
    ("처음에는 기본 개념부터 익히는 것이 중요합니다.", "처음에는 기본 개념부터 익히는 게 중요해."),
    ("{m} 연습하면 금방 익숙해질 거예요.", "{m} 연습하면 금방 익숙해질 거야."),
    (
        "가장 흔한 실수는 너무 많은 것을 한꺼번에 하려는 것입니다.",
        "제일 흔한 실수는 너무 많은 걸 한꺼번에 하려는 거야.",
    ),
    ("{t:에} 관한 책을 {n} 권 정도 읽어 보시는 것을 추천합니다.", "{t:에} 관한 책을 {n} 권 정도 읽어 보는 걸 추천해."),
    ("전문가들은 {m} 시작하라고 조언합니다.", "전문가들은 {m} 시작하라고 조언해."),
    ("비용은 상황에 따라 크게 달라질 수 있습니다.", "비용은 상황에 따라 크게 달라질 수 있어."),
    ("예산을 미리 정해 두면 도움이 됩니다.", "예산을 미리 정해 두면 도움이 돼."),
    ("궁금한 점이 있으면 언제든지 다시 물어보세요.", "궁금한 게 있으면 언제든지 다시 물어봐."),
    ("{t:의} 장점은 누구나 쉽게 시작할 수 있다는 점이에요.", "{t:의} 장점은 누구나 쉽게 시작할 수 있다는 점이야."),
    ("단점으로는 시간이 꽤 든다는 것을 꼽을 수 있습니다.", "단점으로는 시간이 꽤 든다는 걸 꼽을 수 있어."),
    ("무엇보다 본인에게 맞는 방법을 찾는 것이 중요해요.", "무엇보다 너한테 맞는 방법을 찾는 게 중요해."),
    ("{n} 가지 단계로 나누어 설명드리겠습니다.", "{n} 가지 단계로 나눠서 설명할게."),
    ("첫째, 목표를 구체적으로 정하세요.", "첫째, 목표를 구체적으로 정해."),
    ("둘째, 진행 상황을 기록해 두시면 좋습니다.", "둘째, 진행 상황을 기록해 두면 좋아."),
    ("셋째, 작은 성공을 스스로 칭찬해 주세요.", "셋째, 작은 성공을 스스로 칭찬해 줘."),
    ("이 방법은 특히 초보자에게 효과적입니다.", "이 방법은 특히 초보자한테 효과적이야."),
    ("다만 개인차가 있으니 참고만 하시기 바랍니다.", "다만 개인차가 있으니까 참고만 해."),
    ("{t:은} 최근 몇 년 사이에 관심이 크게 늘었습니다.", "{t:은} 최근 몇 년 사이에 관심이 크게 늘었어."),
    ("관련 자료는 공공 기관 누리집에서 찾아보실 수 있어요.", "관련 자료는 공공 기관 누리집에서 찾아볼 수 있어."),
    ("주변 사람들과 함께하면 동기 부여가 잘 됩니다.", "주변 사람들이랑 같이 하면 동기 부여가 잘 돼."),
    ("결과가 바로 나오지 않더라도 실망하지 마세요.", "결과가 바로 안 나와도 실망하지 마."),
    ("{m} 쉬어 가는 것도 중요한 전략입니다.", "{m} 쉬어 가는 것도 중요한 전략이야."),
    ("많은 분이 {t:을} 통해 새로운 취미를 얻으셨습니다.", "많은 사람이 {t:을} 통해서 새 취미를 얻었어."),
    ("필요한 준비물은 생각보다 간단합니다.", "필요한 준비물은 생각보다 간단해."),
    ("처음 한 달이 가장 힘들다고들 합니다.", "처음 한 달이 제일 힘들다고들 해."),
    ("자세한 내용은 아래에 정리해 두었습니다.", "자세한 내용은 아래에 정리해 뒀어."),
    ("이 부분은 흔히 오해하기 쉬운 내용이에요.", "이 부분은 흔히 오해하기 쉬운 내용이야."),
    ("실제로 해 보면 훨씬 재미있으실 거예요.", "실제로 해 보면 훨씬 재미있을 거야."),
    ("안전을 위해 기본 수칙은 꼭 지켜 주세요.", "안전을 위해서 기본 수칙은 꼭 지켜."),
    ("{t:과} 관련된 용어를 먼저 정리해 보겠습니다.", "{t:과} 관련된 용어를 먼저 정리해 볼게."),
    ("이런 경우에는 전문가와 상담하시는 것이 좋습니다.", "이런 경우에는 전문가랑 상담하는 게 좋아."),
    ("정답이 하나만 있는 것은 아닙니다.", "정답이 하나만 있는 건 아니야."),
    ("여러 방법을 비교해 보고 선택하시면 됩니다.", "여러 방법을 비교해 보고 고르면 돼."),
    ("시간이 지나면 자연스럽게 실력이 늘어요.", "시간이 지나면 자연스럽게 실력이 늘어."),
    ("도움이 되셨기를 바랍니다.", "도움이 됐으면 좋겠어."),
]
INSTRUCTIONS_POLITE = [
    "{t:에} 대해 설명해 주세요.",
    "{t:의} 장점과 단점은 무엇인가요?",
    "{t:을} 처음 시작하려면 어떻게 해야 하나요?",
    "초보자를 위한 {t} 팁을 알려 주시겠어요?",
    "{t:과} 관련해서 흔히 하는 오해는 무엇이 있을까요?",
    "{t:을} 잘하는 방법을 단계별로 알려 주세요.",
    "{t:에} 드는 비용은 어느 정도인가요?",
    "요즘 {t:이} 인기 있는 이유가 뭔가요?",
]
INSTRUCTIONS_BANMAL = ["{t:에} 대해 설명해 줘.", "{t:을} 어떻게 시작해?", "{t} 팁 좀 알려 줘."]
INSTRUCTIONS_NEUTRAL = ["{t} 핵심 요약", "다음 글의 주제를 한 문장으로 요약하시오."]
INPUTS = [
    "최근 조사에 따르면 {t:에} 관심을 가진 사람이 꾸준히 늘고 있다. 특히 20대와 30대의 참여가 두드러진다.",
    "{t:은} 오랜 역사를 가지고 있으며 지역마다 조금씩 다른 방식으로 발전해 왔다.",
]
CODE = "```python\ndef average(values):\n    return sum(values) / len(values)\n\nprint(average([1, 2, 3]))\n```"
PARTICLES = {
    "을": ("을", "를"),
    "은": ("은", "는"),
    "이": ("이", "가"),
    "과": ("과", "와"),
    "의": ("의", "의"),
    "에": ("에", "에"),
}


def with_particle(word: str, particle: str) -> str:
    last = word[-1]
    has_final = "가" <= last <= "힣" and (ord(last) - 0xAC00) % 28 != 0
    after_consonant, after_vowel = PARTICLES[particle]
    return word + (after_consonant if has_final else after_vowel)


def fill(template: str, rng: random.Random, topic: str) -> str:
    for particle in PARTICLES:
        template = template.replace(f"{{t:{particle}}}", with_particle(topic, particle))
    return template.replace("{t}", topic).replace("{m}", rng.choice(MODIFIERS)).replace("{n}", rng.choice(NUMBERS))


def answer(rng: random.Random, topic: str, level: str) -> str:
    """An answer of 1 to ~60 sentences in paragraphs, sometimes with a list or a code block."""
    count = min(int(rng.lognormvariate(1.7, 0.7)) + 1, 60)
    picks = [rng.choice(SENTENCES) for _ in range(count)]
    if level == "polite":
        sentences = [fill(p, rng, topic) for p, _ in picks]
    elif level == "banmal":
        sentences = [fill(b, rng, topic) for _, b in picks]
    else:  # mixed: a polite answer that slips into 반말 halfway
        sentences = [fill(p if i < count // 2 else b, rng, topic) for i, (p, b) in enumerate(picks)]
        if count == 1:
            sentences.append(fill(rng.choice(SENTENCES)[1], rng, topic))
    paragraphs, current = [], []
    for sentence in sentences:
        current.append(sentence)
        if rng.random() < 0.3:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    if rng.random() < 0.1:
        paragraphs.insert(1, "\n".join(f"{i}. {fill(rng.choice(SENTENCES)[0], rng, topic)}" for i in range(1, 4)))
    if rng.random() < 0.04:
        paragraphs.insert(1, CODE)
    return "\n\n".join(paragraphs)


def instruction(rng: random.Random, topic: str) -> str:
    roll = rng.random()
    bank = INSTRUCTIONS_POLITE if roll < 0.8 else INSTRUCTIONS_BANMAL if roll < 0.9 else INSTRUCTIONS_NEUTRAL
    return fill(rng.choice(bank), rng, topic)


def junk_row(rng: random.Random, topic: str, kind: str) -> dict | str:
    if kind == "html":
        body = answer(rng, topic, "polite").replace("\n\n", "</p><p>")
        return {"instruction": instruction(rng, topic), "input": "", "output": f"<div><p>{body}</p></div>&nbsp;&amp;"}
    if kind == "symbols":
        return {"instruction": instruction(rng, topic), "input": "", "output": "★☆◆◇" * 20 + " 좋아요 " + "♣♧■□" * 20}
    if kind == "repeated":
        line = fill(rng.choice(SENTENCES)[0], rng, topic)
        return {"instruction": instruction(rng, topic), "input": "", "output": "\n".join([line] * rng.randint(4, 12))}
    if kind == "english":
        return {
            "instruction": instruction(rng, topic),
            "input": "",
            "output": "This answer is written in English only. " * 3,
        }
    if kind == "short":
        return {"instruction": instruction(rng, topic), "input": "", "output": "네."}
    if kind == "missing":
        return {"instruction": instruction(rng, topic), "input": ""}
    return "{not json: " + topic


def near_copy(rng: random.Random, text: str) -> str:
    """The same answer with one word dropped and spacing changed: a typical re-scraped duplicate."""
    words = text.split(" ")
    if len(words) > 12:
        del words[rng.randrange(len(words))]
    return "  ".join(words[:3]) + " " + " ".join(words[3:])


def make_rows(rng: random.Random, count: int, chat: bool) -> list[str]:
    lines: list[str] = []
    kept: list[dict] = []
    for _ in range(count):
        roll = rng.random()
        topic = rng.choice(TOPICS)
        if kept and roll < 0.05:  # exact duplicate
            lines.append(json.dumps(rng.choice(kept), ensure_ascii=False))
            continue
        if kept and roll < 0.08 and not chat:  # near duplicate
            row = dict(rng.choice(kept))
            row["output"] = near_copy(rng, row["output"])
            lines.append(json.dumps(row, ensure_ascii=False))
            continue
        if roll < 0.15 and not chat:
            kind = rng.choice(["html", "html", "symbols", "repeated", "english", "short", "missing", "invalid"])
            row = junk_row(rng, topic, kind)
            lines.append(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            continue
        level = "banmal" if roll < 0.23 else "mixed" if roll < 0.26 else "polite"
        if chat:
            turns = 1 if rng.random() < 0.5 else rng.randint(2, 3)
            messages = []
            for _turn in range(turns):
                messages.append({"role": "user", "content": instruction(rng, topic)})
                messages.append({"role": "assistant", "content": answer(rng, topic, level)})
            row = {"messages": messages}
        else:
            extra = fill(rng.choice(INPUTS), rng, topic) if rng.random() < 0.2 else ""
            row = {"instruction": instruction(rng, topic), "input": extra, "output": answer(rng, topic, level)}
        kept.append(row)
        lines.append(json.dumps(row, ensure_ascii=False))
    return lines


def write_inputs(folder: Path, rows: int, seed: int) -> Path:
    rng = random.Random(seed)
    chat_rows = rows // 4
    (folder / "instructions.jsonl").write_text(
        "\n".join(make_rows(rng, rows - chat_rows, chat=False)) + "\n", encoding="utf-8"
    )
    (folder / "chats.jsonl").write_text("\n".join(make_rows(rng, chat_rows, chat=True)) + "\n", encoding="utf-8")
    mix = {
        "name": "bench_build_dataset",
        "seed": seed,
        "num_proc": 2,
        "sources": [
            {
                "name": "instructions",
                "path": "instructions.jsonl",
                "columns": {"instruction": "instruction", "input": "input", "output": "output"},
            },
            {"name": "chats", "path": "chats.jsonl", "columns": {"messages": "messages"}, "weight": 0.5},
        ],
        "dedup": {"near": {"threshold": 0.85, "num_perm": 128, "shingle_size": 5}},
        "banmal_rewrite": {"share": 0.5},
        "sample": {"size": min(100_000, rows // 2)},
        "split": {"eval_size": 2000 if rows >= 20_000 else max(1, rows // 100)},
    }
    path = folder / "bench_mix.yaml"
    path.write_text(yaml.safe_dump(mix, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def package_line() -> str:
    return versions(("datasketch", "kiwipiepy", "kiwipiepy-model", "numpy", "pyyaml", "tqdm"))


def document(rows: int, stats: dict, wall: float, input_mb: float) -> dict:
    """What one build measured, as its result file keeps it."""
    rewrite = stats["speech_level"]["rewrite"] or {}
    return {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "packages": package_line(),
        "rows": rows,
        "input_mb": round(input_mb, 1),
        "output": {"train": stats["output"]["train"], "eval": stats["output"]["eval"]},
        "wall_s": round(wall, 2),
        "limit_s": LIMIT_S,
        "timings_s": {name: seconds for name, seconds in stats["timings_s"].items() if name != "total"},
        "assistant_judged": stats["speech_level"]["assistant"]["judged"],
        "turns_rewritten": rewrite.get("turns_rewritten", 0),
    }


def render(doc: dict) -> str:
    """The RESULTS.md section of one result file."""
    wall, limit = doc["wall_s"], doc["limit_s"]
    lines = [
        "## Training-set build (`benchmarks/bench_build_dataset.py`)",
        "",
        f"- Date: {doc['date']}",
        f"- Machine: {doc['machine']}",
        f"- Packages: {doc['packages']}",
        f"- Input: {doc['rows']:,} synthetic rows ({doc['input_mb']:.0f} MB JSON Lines, two sources); "
        f"output: {doc['output']['train']:,} train + {doc['output']['eval']:,} eval rows",
        f"- **Whole build: {wall:.1f} s** (limit {limit:.0f} s: {'pass' if wall < limit else 'FAIL'})",
        "",
        "| stage | seconds |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in doc["timings_s"].items()]
    lines += [
        "",
        f"Rows judged by the assistant speech-level stage: {doc['assistant_judged']:,}; "
        f"user turns rewritten into 반말: {doc['turns_rewritten']:,}.",
    ]
    return "\n".join(lines)


def generated_block(root: Path = RESULTS_ROOT / "build_dataset") -> str:
    """The RESULTS.md block of the newest result under `root` (`<date>_<device>/build_dataset.json`)."""
    path = newest_result(root, "build_dataset.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    return f"{BEGIN}\n{render(doc)}\n\nRaw results: `{path.relative_to(REPO)}`.\n{END}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--progress", action="store_true", help="show the build's progress bars")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_build_dataset-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        mix_path = write_inputs(folder, args.rows, args.seed)
        input_mb = sum(p.stat().st_size for p in folder.glob("*.jsonl")) / 1e6
        print(f"wrote {args.rows:,} rows ({input_mb:.0f} MB) in {time.perf_counter() - start:.1f} s", file=sys.stderr)

        start = time.perf_counter()
        result = build_dataset(load_mix(mix_path), folder / "out", show_progress=args.progress)
        wall = time.perf_counter() - start

    stats = result.stats
    width = max(len(name) for name in stats["timings_s"])
    for name, seconds in stats["timings_s"].items():
        if name != "total":
            print(f"{name:<{width}}  {seconds:8.1f} s")
    print(
        f"{'whole build':<{width}}  {wall:8.1f} s  ({'under' if wall < LIMIT_S else 'OVER'} the {LIMIT_S:.0f} s limit)"
    )
    doc = document(args.rows, stats, wall, input_mb)
    if args.no_record:
        print(render(doc))
        return
    out = write_result(RESULTS_ROOT / "build_dataset" / f"{doc['date']}_cpu" / "build_dataset.json", doc)
    write_block(generated_block(), BEGIN, END)
    print(f"recorded in {out.relative_to(REPO)} and {RESULTS_MD.relative_to(REPO)}")


if __name__ == "__main__":
    main()
