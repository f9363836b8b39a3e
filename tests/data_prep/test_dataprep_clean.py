"""Text clean-up: NFC, whitespace, stray HTML; code left as written."""

from __future__ import annotations

import unicodedata

from eeve_sft.data_prep.clean import clean_messages, clean_text
from eeve_sft.data_prep.mix import CleanStage

ALL = CleanStage()


def test_nfc_composes_decomposed_hangul():
    decomposed = unicodedata.normalize("NFD", "한국어")
    assert len(decomposed) > 3
    assert clean_text(decomposed, ALL) == "한국어"
    assert clean_text(decomposed, CleanStage(unicode_nfc=False)) == decomposed


def test_whitespace_is_normalised_but_indentation_kept():
    text = "  첫\u00a0줄입니다.   \r\n\r\n\r\n\r\n    들여쓴   줄\u200b입니다.\t\n끝\u3000줄 "
    assert clean_text(text, ALL) == "첫 줄입니다.\n\n    들여쓴 줄입니다.\n끝 줄"


def test_whitespace_off_leaves_spacing():
    text = "a   b\n\n\n\nc"
    assert clean_text(text, CleanStage(whitespace=False)) == text


def test_stray_html_tags_and_entities_are_removed():
    text = "<div><p>물은 100도에서 끓습니다.</p><br/>산에서는 더 낮아요.&nbsp;&quot;정말&quot; &amp; 확실&#33;</div>"
    assert clean_text(text, ALL) == '물은 100도에서 끓습니다.\n\n산에서는 더 낮아요. "정말" & 확실!'


def test_script_style_and_comments_go_with_their_content():
    text = "앞<script>alert('x')</script>중간<!-- 주석 --><style>p {color: red}</style>뒤"
    assert clean_text(text, ALL) == "앞중간뒤"


def test_text_that_only_looks_like_tags_stays():
    text = "a < b 이고 List<T>는 제네릭이며 <사용자 이름>을 넣으세요. 점수는 3<5>2 입니다."
    assert clean_text(text, ALL) == text


def test_escaped_markup_stays_visible_as_text():
    assert clean_text("&lt;b&gt;굵게&lt;/b&gt;", ALL) == "<b>굵게</b>"


def test_code_blocks_and_inline_code_are_left_as_written():
    text = "예시입니다:\n```html\n<p>문단</p>  <br>\n    들여쓰기   유지\n```\n그리고 `<div>  태그`도 <b>굵게</b>."
    assert (
        clean_text(text, ALL)
        == "예시입니다:\n```html\n<p>문단</p>  <br>\n    들여쓰기   유지\n```\n그리고 `<div>  태그`도 굵게."
    )


def test_html_off_keeps_tags():
    assert clean_text("<b>굵게</b>", CleanStage(html=False)) == "<b>굵게</b>"


def test_turn_emptied_by_cleaning_drops_the_conversation_but_not_an_empty_system():
    messages = [{"role": "user", "content": "질문"}, {"role": "assistant", "content": "<br>&nbsp;<p></p>"}]
    assert clean_messages(messages, ALL) is None
    with_system = [
        {"role": "system", "content": "<p> </p>"},
        {"role": "user", "content": "질문"},
        {"role": "assistant", "content": "답"},
    ]
    assert clean_messages(with_system, ALL) == with_system[1:]
