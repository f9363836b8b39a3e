"""The chat page of ``scripts/web.py``: one or two models answering in the browser, every answer with its speech level.

:class:`ChatPage` holds what the page does and knows nothing of Gradio (its handlers are plain functions, tested
as such); :func:`build_app` lays it out as a Gradio app. Answers stream through the fast generation path
(:func:`~eeve_sft.inference.answer.stream_answer`), whose decoding step is compiled once by :meth:`ChatPage.warm_up`
while the page says it is warming up. With two models every message goes to both, one after the other, each
keeping its own conversation. With an index every user turn carries its retrieved passages in the layout of
``chat.py --rag`` (:mod:`eeve_sft.retrieval.context`), shown under the answers.

Messages shown in the page are Markdown with a little HTML (badge, passages); the conversations the models see are
kept apart, as plain text, so nothing of the page ever reaches a prompt.
"""

from __future__ import annotations

import html
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UserError, one_line
from ..jsonfiles import write_json
from ..speech_level import BANMAL, MIXED, NEUTRAL, POLITE, classify, sentence_levels
from ..template import encode_prompt
from .sampling import SamplingConfig

MAX_INPUT_CHARS = 2000
LEVEL_NAMES = {POLITE: "존댓말", BANMAL: "반말", MIXED: "mixed", NEUTRAL: "neutral"}
LEVEL_COLOURS = {POLITE: "#1a7f37", BANMAL: "#cf222e", MIXED: "#bf8700", NEUTRAL: "#6e7781"}
# The sentences that decide each label; for mixed, the 반말 ones: they are what kept the answer from 존댓말.
DECIDING = {POLITE: {POLITE}, BANMAL: {BANMAL}, MIXED: {BANMAL, MIXED}, NEUTRAL: set()}
PASSAGE_CHARS = 600  # of each passage's text shown under an answer


@dataclass
class ChatModel:
    """A loaded model and the name the page shows for it."""

    name: str
    model: object
    tokenizer: object


@dataclass
class Badge:
    """An answer's speech level and each of its sentences with its own level and whether it decided the label."""

    level: str
    sentences: list[tuple[str, str, bool]]

    @property
    def deciding(self) -> list[str]:
        return [text for text, _, decided in self.sentences if decided]


def short_name(path: str | Path) -> str:
    """How the page names a local model or index: its last two path parts (a run and its checkpoint, say);
    a Hub id as given."""
    local = Path(path).expanduser()
    return "/".join(local.resolve().parts[-2:]) if local.exists() else str(path)


def speech_badge(text: str) -> Badge:
    level = classify(text)
    return Badge(level, [(s, lv, lv in DECIDING[level]) for s, lv in sentence_levels(text)])


def badge_html(badge: Badge) -> str:
    """The badge and, folded under it, the answer's sentences with the deciding ones marked (open unless 존댓말)."""
    colour = LEVEL_COLOURS[badge.level]
    chip = (
        f'<span class="speech-badge level-{badge.level}" style="background:{colour};color:#fff;'
        f'border-radius:10px;padding:1px 9px;font-size:0.85em">{LEVEL_NAMES[badge.level]}</span>'
    )
    if not badge.sentences:
        return f'<div class="speech-level">{chip}</div>'
    items = []
    for text, level, decided in badge.sentences:
        shown = f"<mark>{html.escape(text)}</mark>" if decided else html.escape(text)
        items.append(f'<li class="level-{level}">{shown} <small>{LEVEL_NAMES[level]}</small></li>')
    counted = f"{len(badge.deciding)}/{len(badge.sentences)} sentences"
    opened = "" if badge.level == POLITE else " open"
    return (
        f'<details class="speech-level"{opened}><summary>{chip} <small>{counted}</small></summary>'
        f"<ul>{''.join(items)}</ul></details>"
    )


def passage_rows(hits) -> list[dict]:
    """What the page shows and saves of each retrieved passage: document, heading path, score, text."""
    return [
        {
            "rank": n,
            "source": h.chunk.source,
            "heading_path": h.chunk.heading_path,
            "score": round(float(h.score), 4),
            "text": h.chunk.text,
        }
        for n, h in enumerate(hits, start=1)
    ]


def passages_html(rows: list[dict]) -> str:
    if not rows:
        return ""
    items = []
    for row in rows:
        where = html.escape(row["source"]) + (f" · {html.escape(row['heading_path'])}" if row["heading_path"] else "")
        text = row["text"] if len(row["text"]) <= PASSAGE_CHARS else row["text"][:PASSAGE_CHARS] + "…"
        items.append(
            f"<li><b>[{row['rank']}] {where}</b> <small>score {row['score']:.3f}</small>"
            f"<blockquote>{html.escape(text)}</blockquote></li>"
        )
    return f'<details class="passages"><summary>문서 {len(rows)}개</summary><ol>{"".join(items)}</ol></details>'


def annotation(badge: Badge, passages: list[dict] | None = None) -> str:
    """What the page shows under an answer, as a message of its own (so no Markdown of the answer, such as an
    unclosed code fence, can swallow it): the badge, then the turn's passages."""
    parts = [badge_html(badge)]
    if passages:
        parts.append(passages_html(passages))
    return "\n\n".join(parts)


def error_message(text: str) -> str:
    return f"⚠ {text}"


@dataclass
class Session:
    """One browser tab's conversation: what each model saw and said, what the page shows, and the saved record."""

    conversations: list[list[dict]]
    shown: list[list[dict]]
    turns: list[dict] = field(default_factory=list)
    id: str = field(default_factory=lambda: f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")


class ChatPage:
    """What the page does, for one or two models, with or without retrieval."""

    def __init__(
        self,
        models: list[ChatModel],
        sampling: SamplingConfig | None = None,
        system_prompt: str | None = None,
        index=None,
        rag_top_k: int = 3,
        save_dir: str | Path | None = None,
        max_input_chars: int = MAX_INPUT_CHARS,
    ):
        if not 1 <= len(models) <= 2:
            raise UserError(f"the page shows one or two models, got {len(models)}")
        self.models = models
        self.sampling = sampling or SamplingConfig()
        self.system_prompt = system_prompt
        self.index = index
        self.rag_top_k = rag_top_k
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.max_input_chars = max_input_chars
        self._ready = threading.Event()
        self._warm_up_error: str | None = None
        self._lock = threading.Lock()  # one generation at a time, whatever the web server's threads do

    # Warm-up ---------------------------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Compile every model's decoding step (on a CUDA GPU) and load the classifier, then mark the page ready."""
        from .answer import warm_up_chat

        try:
            for chat in self.models:
                warm_up_chat(chat.model, chat.tokenizer, self.sampling, system_prompt=self.system_prompt)
            classify("준비됐습니다.")  # loads the Kiwi model before the first badge
        except Exception as err:  # the page stays up and says why it cannot answer
            traceback.print_exc(file=sys.stderr)
            self._warm_up_error = one_line(err)
        finally:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._warm_up_error is None

    def status(self) -> str:
        if not self._ready.is_set():
            return "**Warming up**: compiling the decoding step once; the page answers when this is done."
        if self._warm_up_error is not None:
            return error_message(f"warm-up failed: {self._warm_up_error}")
        names = " | ".join(f"`{m.name}`" for m in self.models)
        rag = f", passages from `{Path(self.index.dir).name}`" if self.index is not None else ""
        return f"**Ready**: {names}{rag}"

    # Conversations ----------------------------------------------------------------------------------------------

    def new_session(self) -> Session:
        return Session([[] for _ in self.models], [[] for _ in self.models])

    def sampling_from(self, max_new_tokens, temperature, top_p, top_k, repetition_penalty, greedy) -> SamplingConfig:
        """The page's settings as a SamplingConfig (the seed stays the command line's)."""
        return SamplingConfig(
            max_new_tokens=int(max_new_tokens),
            do_sample=not greedy,
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
            repetition_penalty=float(repetition_penalty),
            seed=self.sampling.seed,
        )

    def check_fits(self, chat: ChatModel, messages: list[dict], max_new_tokens: int) -> str | None:
        """Why `messages` cannot be answered within the model's context, or None."""
        config = chat.model.config.get_text_config(decoder=True)
        context = getattr(config, "max_position_embeddings", None)
        tokens = len(encode_prompt(chat.tokenizer, messages))
        if context and tokens + max_new_tokens > context:
            return (
                f"the conversation ({tokens} tokens) and the answer ({max_new_tokens}) exceed the model's "
                f"context of {context} tokens: press Clear to start a new one"
            )
        return None

    def respond(
        self, message: str, session: Session, sampling: SamplingConfig | None = None, system: str | None = None
    ) -> Iterator[list[list[dict]]]:
        """Answer `message` with every model in turn, yielding what the page shows after each streamed piece.

        A failure (too long, a generation error) becomes a ⚠ message in the page; the conversation the model saw
        is left as it was before the message.
        """
        sampling = sampling or self.sampling
        message = (message or "").strip()
        if not message:
            return
        if len(message) > self.max_input_chars:
            for shown in session.shown:
                shown.append(
                    {
                        "role": "assistant",
                        "content": error_message(
                            f"message too long: {len(message)} characters, the limit is {self.max_input_chars}"
                        ),
                    }
                )
            yield session.shown
            return
        self._ready.wait()
        if self._warm_up_error is not None:
            for shown in session.shown:
                shown.append({"role": "user", "content": message})
                shown.append({"role": "assistant", "content": self.status()})
            yield session.shown
            return
        content, passages = message, []
        if self.index is not None:
            from ..retrieval.context import augment_question

            content, hits = augment_question(self.index, message, self.rag_top_k)
            passages = passage_rows(hits)
        system_turn = [{"role": "system", "content": system}] if system and system.strip() else []
        turn = {"question": message, "system": system or None, "sampling": asdict(sampling), "answers": []}
        if passages:
            turn["passages"] = passages
        for shown in session.shown:
            shown.append({"role": "user", "content": message})
        for chat, conversation, shown in zip(self.models, session.conversations, session.shown, strict=True):
            shown.append({"role": "assistant", "content": "…"})
            yield session.shown
            answer: str | None = None
            for update in self._answer(chat, [*system_turn, *conversation], content, sampling):
                if isinstance(update, Failure):
                    answer = None
                    shown[-1]["content"] = error_message(update.text)
                    turn["answers"].append({"model": chat.name, "error": update.text})
                    break
                answer = update
                shown[-1]["content"] = answer
                yield session.shown
            if answer is not None:
                badge = speech_badge(answer)
                shown[-1]["content"] = answer or "_(empty answer)_"
                shown.append({"role": "assistant", "content": annotation(badge, passages)})
                conversation.append({"role": "user", "content": content})
                conversation.append({"role": "assistant", "content": answer})
                turn["answers"].append({"model": chat.name, "answer": answer, "speech_level": badge.level})
            yield session.shown
        session.turns.append(turn)
        self.save(session)

    def _answer(self, chat: ChatModel, history: list[dict], content: str, sampling: SamplingConfig):
        """The answer so far, piece by piece, or one Failure."""
        from .answer import stream_answer

        messages = [*history, {"role": "user", "content": content}]
        problem = self.check_fits(chat, messages, sampling.max_new_tokens)
        if problem is not None:
            yield Failure(problem)
            return
        with self._lock:
            try:
                yield from stream_answer(chat.model, chat.tokenizer, messages, sampling)
            except Exception as err:  # shown in the page; the server keeps serving
                traceback.print_exc(file=sys.stderr)
                yield Failure(f"generation failed: {one_line(err)}")

    def save(self, session: Session) -> Path | None:
        """Write the session's conversation to SAVE_DIR/ID.json (whole, replacing the previous turn's file)."""
        if self.save_dir is None or not session.turns:
            return None
        path = self.save_dir / f"{session.id}.json"
        record = {"id": session.id, "models": [m.name for m in self.models], "turns": session.turns}
        if self.index is not None:
            record["rag"] = {"index": str(self.index.dir), "top_k": self.rag_top_k}
        write_json(path, record)
        return path


@dataclass
class Failure:
    text: str


# The Gradio app -------------------------------------------------------------------------------------------------

CSS = """
.speech-level summary { cursor: pointer; }
.speech-level mark { background: #fff3b0; }
.passages blockquote { font-size: 0.9em; margin: 4px 0 8px 0; }
"""


def build_app(page: ChatPage, title: str = "EEVE chat"):
    """The page as a Gradio Blocks app: chat column(s), a message box, settings, a status line."""
    import gradio as gr

    s = page.sampling
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"## {title}")
        status = gr.Markdown(page.status(), elem_id="status")
        session = gr.State(None)  # a Session from the first message on
        with gr.Row():
            chatbots = [
                gr.Chatbot(label=m.name, height=520, elem_id=f"chat-{i}", feedback_options=None)
                for i, m in enumerate(page.models)
            ]
        with gr.Row():
            box = gr.Textbox(
                placeholder="메시지를 입력하세요 (반말도 괜찮습니다)",
                show_label=False,
                scale=8,
                max_length=page.max_input_chars,
                interactive=page.ready,
                elem_id="message",
            )
            send = gr.Button("Send", variant="primary", scale=1, interactive=page.ready, elem_id="send")
            clear = gr.Button("Clear", scale=1, elem_id="clear")
        with gr.Accordion("Settings", open=False):
            system = gr.Textbox(
                value=page.system_prompt or "", label="System line (empty: the template's own)", lines=2
            )
            with gr.Row():
                max_new = gr.Slider(1, 4096, value=s.max_new_tokens, step=1, label="max new tokens")
                temperature = gr.Slider(0.05, 2.0, value=s.temperature, step=0.05, label="temperature")
                top_p = gr.Slider(0.05, 1.0, value=s.top_p, step=0.05, label="top p")
            with gr.Row():
                top_k = gr.Slider(0, 200, value=s.top_k, step=1, label="top k (0: off)")
                repetition = gr.Slider(0.8, 2.0, value=s.repetition_penalty, step=0.05, label="repetition penalty")
                greedy = gr.Checkbox(value=not s.do_sample, label="greedy")
        settings = [max_new, temperature, top_p, top_k, repetition, greedy]

        def on_message(message, state, system_line, *values):
            try:
                sampling = page.sampling_from(*values)
            except UserError as err:
                raise gr.Error(str(err)) from None
            state = state or page.new_session()
            yield *state.shown, state  # an empty message changes nothing, but a handler must answer
            for shown in page.respond(message, state, sampling, system_line):
                yield *shown, state

        def on_clear():
            fresh = page.new_session()
            return "", *fresh.shown, fresh

        def on_tick():
            done = page._ready.is_set()
            return (
                page.status(),
                gr.update(interactive=page.ready),
                gr.update(interactive=page.ready),
                gr.Timer(active=not done),
            )

        # A sent message leaves the box at once, in the browser (a round trip to the server could wipe what is
        # typed next), and travels with its own event, so the next one can be typed and sent during a
        # generation: it waits in the queue ("multiple") instead of being dropped.
        sent = gr.Textbox(visible="hidden")
        for trigger in (box.submit, send.click):
            trigger(None, box, [box, sent], js="(message) => ['', message]", trigger_mode="multiple").then(
                on_message,
                [sent, session, system, *settings],
                [*chatbots, session],
                trigger_mode="multiple",
                concurrency_limit=1,
                concurrency_id="generation",
            )
        clear.click(on_clear, None, [box, *chatbots, session], queue=False)
        timer = gr.Timer(0.5, active=not page._ready.is_set())
        timer.tick(on_tick, None, [status, box, send, timer], queue=False)
        app.load(on_tick, None, [status, box, send, timer], queue=False)
    # Requests that come during a generation wait in the queue, one generation at a time.
    app.queue(default_concurrency_limit=1)
    return app


def serve(page: ChatPage, host: str, port: int, title: str = "EEVE chat", block: bool = True):
    """Serve the page on host:port and warm the models up behind it; no share link, no analytics, no MCP server."""
    app = build_app(page, title)
    threading.Thread(target=page.warm_up, name="warm-up", daemon=True).start()
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        mcp_server=False,
        show_error=True,
        quiet=True,
        footer_links=[],
        css=CSS,
        prevent_thread_lock=not block,
    )
    return app
