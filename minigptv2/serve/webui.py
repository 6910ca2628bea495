"""The web demo: a Gradio Blocks app that `minigptv2 serve` mounts at `/`.

    minigptv2 serve            # then open http://127.0.0.1:8000/

Upload an image (or pick a generated example scene), press a task button to insert its identifier, type, and
send. Answers stream in; the image is shown again with the answer's boxes and phrase labels drawn. For
`[identify]`, draw over an object with the brush: the bounding box of the drawing, on the 0..100 grid, is appended
to the prompt (as the official demo does). A new image starts a new conversation.

Generation goes through the `Engine` (minigptv2/serve/engine.py: the same queue and worker as the API).
"""
from __future__ import annotations

import hashlib
import html
import random
import tempfile
from pathlib import Path

from minigptv2 import prompts
from minigptv2.boxes import BOX_RE, Grounding, draw_boxes, format_box, to_grid
from minigptv2.errors import MiniGPTv2Error
from minigptv2.generate import Result
from minigptv2.images import image_size, load_image

# the hint shown under the task buttons, per task (prompts.TASKS, then free chat)
HINTS = {
    "vqa": "Ask a question about the image, e.g. `what color is the circle?`",
    "caption": "Ask for a short description, e.g. `briefly describe this image`",
    "grounding": "Ask for a description with a box for each object, e.g. `describe this image`",
    "refer": "Name one object to locate, e.g. `red circle`: the answer is its box",
    "identify": "Draw over an object on the image with the brush, then ask `what is this`: "
                "the drawing's box is appended to your prompt",
    "detection": "Name a kind of object to find every one of, e.g. `circle`",
    "chat": "Free chat: ask anything, no task identifier",
}
assert set(HINTS) == {*prompts.TASKS, "chat"}
N_EXAMPLES = 4


def switch_task(task: str, text: str | None) -> str:
    """The prompt with its leading task identifier (if any) replaced by `task`'s ("chat": none)."""
    return prompts.with_task(task, prompts.without_task(text or ""))


def drawn_box(editor_value) -> tuple[int, int, int, int] | None:
    """Grid box (0..100) around everything drawn on the ImageEditor's layers, or None."""
    if not isinstance(editor_value, dict) or editor_value.get("background") is None:
        return None
    bg = editor_value["background"]
    W, H = bg.size
    box = None
    for layer in editor_value.get("layers") or []:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A")
        b = alpha.point(lambda v: 255 if v > 0 else 0).getbbox()
        if b is None:
            continue
        sx, sy = W / layer.size[0], H / layer.size[1]          # layers may be drawn at another scale
        b = (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)
        box = b if box is None else (min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), max(box[3], b[3]))
    return to_grid(box, W, H) if box else None


def labelled(boxes: list[Grounding], prompt: str) -> list[Grounding]:
    """Bare boxes (a [refer] answer) are labelled with what was asked for."""
    asked = prompts.without_task(BOX_RE.sub("", prompt)).strip()[:40] or None
    return [g if g.phrase else Grounding(g.box, asked) for g in boxes]


def _show(text: str) -> str:
    """Model text for the Chatbot: escaped, so that `<p>` and `<12>` are shown, not parsed as HTML."""
    return html.escape(text)


def example_images(n: int = N_EXAMPLES) -> list[str]:
    """A few synthetic scenes written to a temp folder (what the nano model was trained on)."""
    from minigptv2.synthetic import make_scene

    import atexit
    import shutil

    out = Path(tempfile.mkdtemp(prefix="minigptv2-examples-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)      # the server leaves nothing in /tmp
    paths = []
    for seed in range(n):
        p = out / f"scene{seed}.png"
        make_scene(random.Random(seed)).image.save(p)
        paths.append(str(p))
    return paths


def capped_editor(max_pixels: int, **kw):
    """A gr.ImageEditor whose images pass our header check (accepted format, pixel cap) before Gradio decodes them.

    The browser sends the editor's canvas (background, drawn layers, composite) as PNG files, and Gradio decodes each
    one in `convert_and_format_image`; refusing there keeps an oversized upload from ever being decoded. (The
    instance's method is replaced, not subclassed: Gradio writes a .pyi stub next to any module defining a
    component class.)"""
    import gradio as gr

    editor = gr.ImageEditor(**kw)
    decode = editor.convert_and_format_image

    def checked(file, flatten_on_white=False):
        if file is not None:
            try:
                image_size(getattr(file, "path", file), max_pixels)
            except MiniGPTv2Error as e:
                raise gr.Error(str(e)) from None
        return decode(file, flatten_on_white)

    editor.convert_and_format_image = checked
    return editor


def build(engine, max_tokens_cap: int = 1024, default_max_tokens: int = 300, max_pixels: int = 16_000_000):
    import gradio as gr

    from minigptv2.serve.engine import Busy, GenSettings

    def respond(editor_value, text, history, state, temperature, max_tokens):
        text = (text or "").strip()
        if not text or not prompts.without_task(text).strip():
            gr.Warning("Type a question or instruction first.")
            return
        bg = editor_value.get("background") if isinstance(editor_value, dict) else None
        try:
            image = load_image(bg, max_pixels=max_pixels) if bg is not None else None
        except MiniGPTv2Error as e:
            raise gr.Error(str(e)) from None
        key = hashlib.sha1(image.tobytes()).hexdigest() if image is not None else None
        if not state or state.get("image") != key:       # a new image: a new conversation
            state, history = {"image": key, "messages": []}, []
        if text.startswith("[identify]") and not BOX_RE.search(text):
            box = drawn_box(editor_value)
            if box is None:
                gr.Warning("For [identify], draw over an object on the image first (brush tool).")
                return
            text = f"{text} {format_box(box)}"
        messages = state["messages"] + [{"role": "user", "content": text}]
        history = (history or []) + [{"role": "user", "content": _show(text)}, {"role": "assistant", "content": ""}]
        yield history, "", gr.update(), state
        settings = GenSettings(int(max_tokens), float(temperature), 0.9)
        answer, result = "", None
        try:
            for piece in engine.stream(image, messages, settings):
                if isinstance(piece, Result):
                    result = piece
                else:
                    answer += piece
                    history[-1]["content"] = _show(answer.lstrip())
                    yield history, "", gr.update(), state
        except Busy as e:
            raise gr.Error(str(e)) from None
        except MiniGPTv2Error as e:
            raise gr.Error(str(e)) from None
        history[-1]["content"] = _show(result.text)
        state = {"image": key, "messages": messages + [{"role": "assistant", "content": result.text}]}
        shown = draw_boxes(image, labelled(result.boxes, text)) if image is not None and result.boxes else image
        yield history, "", shown, state

    def clear():
        return [], None, None, ""

    with gr.Blocks(title="MiniGPT-v2") as demo:
        from minigptv2.config import NANO_SCOPE

        scope = f"\n\n{NANO_SCOPE}" if engine.processor.config.name == "nano" else ""   # a line under the title
        gr.Markdown(f"## MiniGPT-v2 demo &nbsp; <small>model: `{html.escape(engine.name)}`</small>{scope}")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                editor = capped_editor(max_pixels, type="pil", image_mode="RGBA", sources=["upload", "clipboard"],
                                       label="Image (upload, or pick an example; draw on it for [identify])",
                                       brush=gr.Brush(colors=["#ff3b30"], default_size=12, color_mode="fixed"),
                                       transforms=(), layers=False, elem_id="image-input", height=420)
                gr.Examples(examples=[[p] for p in example_images()], inputs=[editor], label="Example scenes")
                shown = gr.Image(label="Answer boxes", type="pil", format="png", interactive=False,
                                 elem_id="annotated", height=360)
            with gr.Column(scale=1):
                chatbot = gr.Chatbot(elem_id="chatbot", height=420, label="Conversation", feedback_options=None)
                with gr.Row():
                    buttons = {task: gr.Button("chat" if task == "chat" else f"[{task}]", size="sm", min_width=60,
                                               elem_id=f"task-{task}") for task in HINTS}
                hint = gr.Markdown("Pick a task, then type.", elem_id="hint")
                text = gr.Textbox(show_label=False, placeholder="[refer] red circle", elem_id="prompt", lines=1)
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    reset = gr.Button("Clear conversation", elem_id="clear")
                with gr.Accordion("Generation", open=True):
                    temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)",
                                            elem_id="temperature")
                    max_tokens = gr.Slider(1, max_tokens_cap, value=min(default_max_tokens, max_tokens_cap), step=1,
                                           label="Max new tokens", elem_id="max-tokens")

        for task, btn in buttons.items():
            tip = HINTS[task] if task == "chat" else f"**[{task}]** {HINTS[task]}"
            btn.click(lambda t, k=task, h=tip: (switch_task(k, t), h), inputs=text, outputs=[text, hint],
                      queue=False)
        inputs = [editor, text, chatbot, state, temperature, max_tokens]
        outputs = [chatbot, text, shown, state]
        send.click(respond, inputs, outputs)
        text.submit(respond, inputs, outputs)
        reset.click(clear, None, [chatbot, state, shown, text], queue=False)
    return demo


def mount(app, engine, limits):
    """Mount the demo on a FastAPI app at `/` (API routes added before it keep precedence)."""
    import gradio as gr

    demo = build(engine, max_tokens_cap=limits.max_tokens, default_max_tokens=limits.default_max_tokens,
                 max_pixels=limits.max_image_pixels)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],        # no web-font downloads
                              font_mono=["ui-monospace", "monospace"])
    return gr.mount_gradio_app(app, demo, path="/", theme=theme, ssr_mode=False, footer_links=[],
                               max_file_size=limits.max_body_bytes)
