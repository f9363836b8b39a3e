"""A chat page in the browser: the model answers, and every answer shows its speech level (존댓말 / 반말 / mixed).

    python scripts/web.py --model-path PATH [--model-path PATH2] [--rag INDEX_DIR] [--host 127.0.0.1] [--port 7860]

PATH is what chat.py takes (OUTPUT_DIR/final, a checkpoint, a merged model, a Hub id; default: the EEVE base).
With a second --model-path every message is answered by both models side by side; as in evaluate.py, `base`
stands for the base model of the adapter given beside it. With --rag every user turn is
answered from the passages retrieved from INDEX_DIR, shown under the answers. The page binds to 127.0.0.1 (only
this machine) unless --host says otherwise, offers no public share link, and writes conversations to disk only
with --save-dir. Sampling settings and the system line given here are the page's starting values.
"""

import argparse
import ipaddress
import socket
import sys
from pathlib import Path

from eeve_sft.errors import UserError, one_line_usage_errors, run_cli
from eeve_sft.inference.sampling import add_chat_sampling_flags, chat_sampling


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model-path",
        action="append",
        help="adapter, merged model, Hub id or base (default: the EEVE base model); twice compares two models",
    )
    parser.add_argument("--rag", metavar="INDEX_DIR", help="retrieve passages from this index for every user turn")
    parser.add_argument("--rag-top-k", type=int, default=3, help="passages retrieved per turn with --rag (default 3)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--save-dir", help="write every conversation to this folder as JSON (default: nothing saved)")
    parser.add_argument("--max-input-chars", type=int, default=2000, help="longest message accepted (default 2000)")
    parser.add_argument("--load-in-4bit", action="store_true", help="load the weights in NF4 (needs a CUDA GPU)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--system", help="system line (default: the one saved in the template)")
    add_chat_sampling_flags(parser)
    return one_line_usage_errors(parser).parse_args(argv)


def check_address(host: str, port: int) -> None:
    """Fail before any model loads when the address cannot be served."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as err:
        raise UserError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.model_path and len(args.model_path) > 2:
        raise UserError(f"--model-path: at most two models side by side, got {len(args.model_path)}")
    if args.rag_top_k < 1:
        raise UserError(f"--rag-top-k must be at least 1, got {args.rag_top_k}")
    if args.max_input_chars < 1:
        raise UserError(f"--max-input-chars must be at least 1, got {args.max_input_chars}")
    sampling = chat_sampling(args)
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir is not None:
        if save_dir.exists() and not save_dir.is_dir():
            raise UserError(f"--save-dir {save_dir} is a file, not a folder")
        save_dir.mkdir(parents=True, exist_ok=True)
    from eeve_sft.evaluation.politeness import expand_model_paths
    from eeve_sft.inference.loading import load_for_inference, resolve_model_source

    # A bad path fails before any weights load; "base" is the base model of the adapter beside it, as in evaluate.py.
    sources = expand_model_paths(args.model_path) if args.model_path else [resolve_model_source(None)]
    check_address(args.host, args.port)
    try:
        import gradio  # noqa: F401  (checked before the models load)
    except ImportError:
        raise UserError("the web page needs Gradio: pip install -e '.[web]'") from None
    from eeve_sft.inference.web import ChatModel, ChatPage, serve, short_name

    index = None
    if args.rag:
        from eeve_sft.retrieval import RetrievalIndex

        index = RetrievalIndex(args.rag)
    models = []
    for n, source in enumerate(sources):
        model, tokenizer = load_for_inference(source.path, load_in_4bit=args.load_in_4bit, device=args.device)
        name = short_name(source.given)
        models.append(ChatModel(name if n == 0 or name != models[0].name else f"{name} (2)", model, tokenizer))
    page = ChatPage(
        models,
        sampling=sampling,
        system_prompt=args.system,
        index=index,
        rag_top_k=args.rag_top_k,
        save_dir=save_dir,
        max_input_chars=args.max_input_chars,
    )
    where = f"http://{'localhost' if is_loopback(args.host) else args.host}:{args.port}"
    if not is_loopback(args.host):
        print(f"warning: --host {args.host}: the page is open to other machines on the network", file=sys.stderr)
    print(f"Chat page on {where} (warming up first; Ctrl-C stops it)", flush=True)
    try:
        serve(page, args.host, args.port)
    except OSError as err:  # the port was taken between the check and the launch
        raise UserError(f"cannot serve on {args.host}:{args.port}: {err}") from None


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
