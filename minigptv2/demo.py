"""`minigptv2 demo`: every task identifier on a generated scene, with the embedded nano model (no network).

    minigptv2 demo                           # scene seed 0, writes minigptv2_demo.png
    minigptv2 demo --seed 7 --out demo.png
    minigptv2 demo --model m7b --image photo.jpg --object "the cat" --shape cat

Prints each prompt, the answer and its parsed boxes (grid and pixels), with the ground truth for generated
scenes, and writes one PNG: a panel per box-producing task with the boxes and phrases drawn.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw

from minigptv2.boxes import draw_boxes, format_box
from minigptv2.devices import add_device_args, load_kwargs


def prompts_for(scene=None, obj: str = "red circle", shape: str = "circle", box=None) -> list[tuple[str, str]]:
    """(prompt, expected answer or '') per task, for a synthetic scene or free-form names."""
    from minigptv2 import synthetic as S

    if scene is not None:
        o = scene.objects[0]
        obj, shape, box = o.name, o.shape, scene.grid(o)
    box = box or (10, 10, 60, 60)
    return [
        ("[caption] Briefly describe this image.", S.caption(scene) if scene else ""),
        ("[grounding] describe this image as detailed as possible", S.grounded_caption(scene) if scene else ""),
        (f"[refer] where is {obj} ?", format_box(box) if scene else ""),
        (f"[identify] what is it in {format_box(box)}", obj if scene else ""),
        (f"[detection] {shape}", S.detection(scene, shape) if scene else ""),
        ("[vqa] how many shapes are there?", S.NUMBERS[len(scene.objects)] if scene else ""),
        ("what is in this image?", ""),
    ]


def panel(image: Image.Image, title: str, groundings) -> Image.Image:
    img = draw_boxes(image, groundings) if groundings else image.convert("RGB").copy()
    out = Image.new("RGB", (img.width, img.height + 18), "white")
    out.paste(img, (0, 18))
    ImageDraw.Draw(out).text((4, 3), title, fill=(0, 0, 0))
    return out


def parser() -> argparse.ArgumentParser:
    """The `minigptv2 demo` parser."""
    p = argparse.ArgumentParser(prog="minigptv2 demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the embedded nano model)")
    p.add_argument("--seed", type=int, default=0, help="which generated scene")
    p.add_argument("--image", default=None, help="use this image instead of a generated scene")
    p.add_argument("--object", default="red circle", help="object to [refer] to (with --image)")
    p.add_argument("--shape", default="circle", help="what to [detection] (with --image)")
    p.add_argument("--out", default="minigptv2_demo.png", help="the annotated PNG to write (default "
                   "minigptv2_demo.png)")
    p.add_argument("--max-new-tokens", type=int, default=80, help="most tokens per answer")
    add_device_args(p)
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)

    from minigptv2 import generate, load
    from minigptv2.images import load_image
    from minigptv2.synthetic import make_scene

    model, proc = load(a.model, **load_kwargs(a))
    if a.model is None:
        from minigptv2.config import NANO_SCOPE   # imports transformers: not for `demo --help`

        print(NANO_SCOPE)
    if a.image:
        scene, image = None, load_image(a.image)
        tasks = prompts_for(None, a.object, a.shape)
    else:
        scene = make_scene(random.Random(a.seed))
        image = scene.image
        tasks = prompts_for(scene)
    results = generate(model, proc, [image] * len(tasks), [t for t, _ in tasks], max_new_tokens=a.max_new_tokens,
                       constrain_boxes=True)
    W, H = image.size
    panels = [panel(image, "input", [])]
    n_ok = 0
    print(f"scene: {W}x{H}" + (f", objects: {', '.join(o.name for o in scene.objects)}" if scene else ""))
    for (prompt, expected), r in zip(tasks, results):
        print(f"\n> {prompt}\n  {r.text}")
        for g in r.boxes:
            px = ", ".join(f"{v:.0f}" for v in g.pixels(W, H))
            print(f"    box {list(g.box)} -> pixels ({px})" + (f"  [{g.phrase}]" if g.phrase else ""))
        if expected:
            ok = r.text.strip() == expected
            n_ok += ok
            print(f"  expected: {expected}  {'(exact match)' if ok else ''}")
        if r.boxes:
            panels.append(panel(image, prompt[:40], r.boxes))
    sheet = Image.new("RGB", (sum(pn.width for pn in panels) + 6 * (len(panels) - 1), max(pn.height for pn in panels)),
                      "white")
    x = 0
    for pn in panels:
        sheet.paste(pn, (x, 0))
        x += pn.width + 6
    out = Path(a.out)
    tmp = out.with_name(out.name + ".tmp.png")
    sheet.save(tmp)
    tmp.replace(out)
    if scene:
        print(f"\n{n_ok}/{sum(1 for _, e in tasks if e)} answers match the ground truth exactly")
    print(f"annotated image: {out.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
