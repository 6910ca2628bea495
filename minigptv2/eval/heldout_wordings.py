"""Held-out instruction wordings for the synthetic bench's `paraphrase` view (eval/synthetic_views.py).

Written before any training wording (issue #31), and kept apart from them: the training paraphrases live in
minigptv2/synthetic_wordings.py, and tests/eval/test_synthetic_views.py checks that no wording here is one of
them (nor one of the official templates of prompts.py). Never import this module from training code.

Every wording keeps the task identifier, so the model still knows the task; what changes is the rest of the
instruction. `{}` is the task's content: an object name (refer: "red circle"), a box string (identify), a shape
(detection), nothing (caption, grounding). VQA questions are reworded per question kind (the four kinds of
synthetic.vqa_questions); the answer stays the short one.

Eleven sets: the first (REFER … VQA, view `paraphrase`) was written before any training wording; the second
(`V2`, view `paraphrase2`) after the first training wordings had been trained on and scored, and before the
second, wider round of training wordings; the third (`V3`, view `paraphrase3`) after the second round had been
scored and before the third; the fourth (`V4`, view `paraphrase4`) after the third round had been scored and
before the fourth; the fifth (`V5`, view `paraphrase5`) after the fourth round had been scored and before the
fifth; the sixth (`V6`, view `paraphrase6`) after the fifth had been scored and before any sixth round, so no
set was looked at when writing the wordings it scores; the seventh (`V7`, view `paraphrase7`) after sets 4 to 6
had been looked at wording by wording (2026-12-06), before any sixth round; the eighth (`V8`, view
`paraphrase8`) after the seventh had been looked at and before any seventh round, so it is unseen; the ninth (`V9`,
view `paraphrase9`) before any seventh round too, without reading the eighth; the tenth (`V10`, view
`paraphrase10`) before the word-noise pilot was scored, reading neither the eighth nor the ninth; the eleventh
(`V11`, view `paraphrase11`) on 2026-12-07 after the ninth's VQA and the seventh's identify wordings had been read,
before any further round of training wordings.
The third varies the nouns
("item", "thing", "figure", "object") and the verbs of yes/no questions ("notice", "include", "spot"); the fourth
wraps every task in polite and indirect forms ("do you know ...", "please ...", "would you say ..."); the fifth
is casual and terse, some of it capitalized and punctuated as people type ("Tell me the circle's colour.",
"circle - what color?"); the sixth says what the user needs as a statement, or asks after a clause ("I need
the colour of the circle", "there is a circle. What color is it?"); the seventh is sentences to complete and
questions with a hint about the answer's form ("the circle is colored", "how many shapes? answer with a number");
the eighth frames the request rather than asking it ("Q: ... A:", "for a quiz, ...", "the user wants ...",
"next task. ...", "box needed: ..."); the ninth is formal and technical, with the subject first ("Kindly
state the colour of the circle.", "the circle: its color?", "Region {box}: classify the object therein."); the
tenth is English as a learner writes it ("which color have the circle?", "how much shapes is there?"); the
eleventh puts the request inside chat filler ("hi! quick question: what colour is the circle? thanks").
"""
from __future__ import annotations

import random
import re

from minigptv2.synthetic import VQA_PATTERNS

REFER = [
    "[refer] find the {}",
    "[refer] point to the {}",
    "[refer] show me where the {} is",
    "[refer] locate the {} in the picture",
    "[refer] which box holds the {}?",
]
IDENTIFY = [
    "[identify] what is at {}?",
    "[identify] name the object inside {}",
    "[identify] what do you see in {}",
    "[identify] tell me what {} contains",
    "[identify] which shape is in {}?",
]
DETECTION = [
    "[detection] find every {}",
    "[detection] locate each {}",
    "[detection] mark all of the {} shapes",
    "[detection] where is each {}?",
    "[detection] boxes for every {}",
]
CAPTION = [
    "[caption] what do you see?",
    "[caption] describe the picture",
    "[caption] what is in this image?",
    "[caption] tell me what this picture shows",
    "[caption] list the shapes in the image",
]
GROUNDING = [
    "[grounding] describe this image",
    "[grounding] what is in this picture, with boxes?",
    "[grounding] tell me what you see and where",
    "[grounding] describe the scene",
    "[grounding] caption this image with locations",
]
# per VQA question kind: (pattern of the synthetic question, wordings filled with the pattern's groups)
VQA = [
    (VQA_PATTERNS["color"], ["[vqa] which colour is the {0}?", "[vqa] tell me the color of the {0}",
                             "[vqa] the {0} has what color?", "[vqa] what is the color of the {0}?"]),
    (VQA_PATTERNS["shape"], ["[vqa] which shape is {0}?", "[vqa] what kind of shape is the {0} one?",
                             "[vqa] the {0} object has which shape?",
                             "[vqa] name the shape of the {0} object"]),
    (VQA_PATTERNS["count"], ["[vqa] count the shapes", "[vqa] how many objects are in the picture?",
                             "[vqa] what is the number of shapes?", "[vqa] how many shapes do you see?"]),
    (VQA_PATTERNS["exists"], ["[vqa] do you see a {0} {1}?", "[vqa] does the image contain a {0} {1}?",
                              "[vqa] can you find a {0} {1} here?", "[vqa] is a {0} {1} present?"]),
]
BY_TASK = {"refer": REFER, "identify": IDENTIFY, "detection": DETECTION, "caption": CAPTION, "grounding": GROUNDING}

# the second held-out set (issue #31, written 2026-12-05 before the second round of training wordings)
V2_BY_TASK = {
    "refer": ["[refer] where's the {}?", "[refer] can you locate the {}?", "[refer] I'm looking for the {}",
              "[refer] mark the {} for me", "[refer] which part of the image has the {}?"],
    "identify": ["[identify] what's in {}?", "[identify] what object is located at {}?",
                 "[identify] describe the thing at {}", "[identify] what can be seen in {}?",
                 "[identify] what sits inside {}?"],
    "detection": ["[detection] show all the {} shapes", "[detection] where are the {} shapes?",
                  "[detection] find all {}", "[detection] spot every {} in the picture", "[detection] outline each {}"],
    "caption": ["[caption] what's in the picture?", "[caption] describe what you see", "[caption] give a short caption",
                "[caption] what does the image show?", "[caption] caption this"],
    "grounding": ["[grounding] describe the picture with boxes", "[grounding] what's where in this image?",
                  "[grounding] list each shape with its location", "[grounding] describe what you see, with boxes",
                  "[grounding] give a grounded caption"],
}
V2_VQA = [
    (VQA_PATTERNS["color"], ["[vqa] what's the color of the {0}?", "[vqa] the {0} is what color?",
                             "[vqa] what color is that {0}?", "[vqa] what color has the {0} got?"]),
    (VQA_PATTERNS["shape"], ["[vqa] what shape is the {0} one?", "[vqa] which shape is colored {0}?",
                             "[vqa] what's the shape of the {0} object?",
                             "[vqa] the {0} thing is which shape?"]),
    (VQA_PATTERNS["count"], ["[vqa] how many shapes are in this picture?", "[vqa] how many objects can you see?",
                             "[vqa] count the objects in the image", "[vqa] what's the number of objects here?"]),
    (VQA_PATTERNS["exists"], ["[vqa] is there a {0} {1} in the picture?", "[vqa] can you see a {0} {1}?",
                              "[vqa] does this image have a {0} {1}?", "[vqa] any {0} {1} here?"]),
]
# the third held-out set (issue #31, written 2026-12-05 before the third round of training wordings)
V3_BY_TASK = {
    "refer": ["[refer] please box the {}", "[refer] help me find the {}", "[refer] in which area is the {}?",
              "[refer] highlight the {}", "[refer] get me the location of the {}"],
    "identify": ["[identify] what item is in {}?", "[identify] tell me what's at {}",
                 "[identify] which figure occupies {}?", "[identify] what thing is drawn inside {}?",
                 "[identify] label the object in {}"],
    "detection": ["[detection] box every single {}", "[detection] show me each {}", "[detection] find the {} items",
                  "[detection] give me all {} locations", "[detection] where can I find each {}?"],
    "caption": ["[caption] tell me what's in this image", "[caption] what can you see here?",
                "[caption] describe this picture in a few words", "[caption] what items are in the image?",
                "[caption] caption the picture"],
    "grounding": ["[grounding] describe the image with a box for each shape", "[grounding] what's here and where?",
                  "[grounding] name every shape and box it", "[grounding] a caption with locations, please",
                  "[grounding] describe and locate everything"],
}
V3_VQA = [
    (VQA_PATTERNS["color"], ["[vqa] could you tell me the {0}'s color?",
                             "[vqa] what colour do you think the {0} is?",
                             "[vqa] what's the {0}'s colour in this picture?",
                             "[vqa] I wonder what color the {0} is"]),
    (VQA_PATTERNS["shape"], ["[vqa] the {0} item, what shape is it?",
                             "[vqa] what kind of figure is the {0} one?",
                             "[vqa] what shape does the {0} thing have?",
                             "[vqa] which shape is painted {0}?"]),
    (VQA_PATTERNS["count"], ["[vqa] how many things can you count in this image?",
                             "[vqa] how many figures do you notice?", "[vqa] what's the total count of items?",
                             "[vqa] tell me the number of things in the picture"]),
    (VQA_PATTERNS["exists"], ["[vqa] do you notice a {0} {1}?", "[vqa] is a {0} {1} included in this image?",
                              "[vqa] can a {0} {1} be found in the picture?",
                              "[vqa] is a {0} {1} part of this scene?"]),
]
# the fourth held-out set (issue #31, written 2026-12-05 before the fourth round of training wordings): polite and
# indirect forms ("do you know ...", "please ...", "would you say ...") around every task
V4_BY_TASK = {
    "refer": ["[refer] do you know where the {} is?", "[refer] I need the box around the {}",
              "[refer] show the {} with a box", "[refer] where exactly is the {}?", "[refer] find me the {} please"],
    "identify": ["[identify] do you know what is in {}?", "[identify] what have we got at {}?",
                 "[identify] name what you see at {}", "[identify] what's shown in the region {}?",
                 "[identify] which one is at {}?"],
    "detection": ["[detection] please locate every {}", "[detection] I want boxes around each {}",
                  "[detection] where do the {} shapes appear?", "[detection] find each and every {}",
                  "[detection] point out all {} shapes"],
    "caption": ["[caption] please describe the image", "[caption] could you caption this picture?",
                "[caption] what's going on in this image?", "[caption] in one sentence, what is shown?",
                "[caption] do you know what this image shows?"],
    "grounding": ["[grounding] please describe the image and mark each shape",
                  "[grounding] where is everything in this picture?",
                  "[grounding] could you describe the scene with boxes?",
                  "[grounding] tell me what's shown, with a box per shape",
                  "[grounding] do a grounded caption of this image"],
}
V4_VQA = [
    (VQA_PATTERNS["color"], ["[vqa] do you know what color the {0} is?",
                             "[vqa] please say which colour the {0} has",
                             "[vqa] what color would you say the {0} is?",
                             "[vqa] what's the colour of that {0} in the image?"]),
    (VQA_PATTERNS["shape"], ["[vqa] do you know the shape of the {0} object?",
                             "[vqa] please tell me which shape is {0}",
                             "[vqa] what shape would you say the {0} one is?",
                             "[vqa] the {0} piece in the image, which shape?"]),
    (VQA_PATTERNS["count"], ["[vqa] do you know how many shapes there are?",
                             "[vqa] please count the items in this picture",
                             "[vqa] how many objects would you say there are?",
                             "[vqa] what number of things is in the image?"]),
    (VQA_PATTERNS["exists"], ["[vqa] do you know if there is a {0} {1}?",
                              "[vqa] please check whether there's a {0} {1}",
                              "[vqa] would you say there is a {0} {1}?",
                              "[vqa] is there a {0} {1} to be seen in the image?"]),
]
# the fifth held-out set (issue #31, written 2026-12-05 before the fifth round of training wordings): casual and
# terse forms, some written with a capital letter and a full stop as people type them
V5_BY_TASK = {
    "refer": ["[refer] Where can I see the {}?", "[refer] {} - where?", "[refer] could you box the {} for me?",
              "[refer] the {}, please", "[refer] Give me the position of the {}."],
    "identify": ["[identify] What is this: {}?", "[identify] {} - what is it?", "[identify] what's that at {}?",
                 "[identify] Tell me the name of the object at {}.", "[identify] {}: which object?"],
    "detection": ["[detection] Find all the {} shapes.", "[detection] every {}, with boxes",
                  "[detection] can you find all the {} shapes?", "[detection] Locate every {} you see.",
                  "[detection] all {} please"],
    "caption": ["[caption] Describe this image.", "[caption] what's this picture?",
                "[caption] a quick description of the image please",
                "[caption] Can you tell me what is in the image?", "[caption] sum up the image"],
    "grounding": ["[grounding] Describe the image with boxes.", "[grounding] what's in it and where?",
                  "[grounding] describe it with locations please", "[grounding] Can you describe and box the shapes?",
                  "[grounding] shapes and where they are"],
}
V5_VQA = [
    (VQA_PATTERNS["color"], ["[vqa] Tell me the {0}'s colour.", "[vqa] {0} - what color?",
                             "[vqa] can you tell what color the {0} is?", "[vqa] colour of the {0}?"]),
    (VQA_PATTERNS["shape"], ["[vqa] Which shape does the {0} object have?",
                             "[vqa] {0} object - what shape?",
                             "[vqa] can you tell which shape the {0} one is?",
                             "[vqa] the {0} object: which shape?"]),
    (VQA_PATTERNS["count"], ["[vqa] How many shapes can be counted?", "[vqa] shapes in total?",
                             "[vqa] can you count how many shapes there are?",
                             "[vqa] How many things are in this picture?"]),
    (VQA_PATTERNS["exists"], ["[vqa] Is a {0} {1} visible?", "[vqa] {0} {1} - is there one?",
                              "[vqa] can you tell if there is a {0} {1}?", "[vqa] any {0} {1} in the image?"]),
]
# the sixth held-out set (issue #31, written 2026-12-05 after sets 4 and 5 had been scored, before any sixth round
# of training wordings): what the user needs said as a statement, and questions that come after a clause
V6_BY_TASK = {
    "refer": ["[refer] I need the location of the {}", "[refer] I am looking for the {}",
              "[refer] there is a {} somewhere; where exactly?", "[refer] mark the spot of the {}",
              "[refer] I want a bounding box around the {}"],
    "identify": ["[identify] I want to know what sits at {}", "[identify] something is at {}; what is it?",
                 "[identify] I can't tell what {} holds", "[identify] label the object found at {}",
                 "[identify] there is an object at {}. What is it called?"],
    "detection": ["[detection] I need boxes around all the {} shapes", "[detection] I am looking for every {}",
                  "[detection] mark out each {} in the picture", "[detection] there may be several of {}; box them",
                  "[detection] outline all {} shapes"],
    "caption": ["[caption] I need a short description of this image",
                "[caption] I can't see the picture; what's on it?", "[caption] what's pictured here, in a sentence?",
                "[caption] give a one-line summary of the picture",
                "[caption] I want to know what this image shows"],
    "grounding": ["[grounding] I need a description with the position of each shape",
                  "[grounding] I can't see the picture; tell me what's on it and where",
                  "[grounding] explain the image, placing each shape",
                  "[grounding] give a caption where every shape has its box",
                  "[grounding] I want to know what is shown and at which location"],
}
V6_VQA = [
    (VQA_PATTERNS["color"], ["[vqa] I need the colour of the {0}",
                             "[vqa] I can't see colours; what is the {0}'s?",
                             "[vqa] there is a {0}. What color is it?", "[vqa] I want to know the {0}'s color"]),
    (VQA_PATTERNS["shape"], ["[vqa] I need the shape of the {0} object",
                             "[vqa] one object is {0}; what shape is it?",
                             "[vqa] there is something {0}. Which shape?",
                             "[vqa] I want to know what shape the {0} thing has"]),
    (VQA_PATTERNS["count"], ["[vqa] I need the number of shapes",
                             "[vqa] I can't count them; how many are there?",
                             "[vqa] there are some shapes. How many?",
                             "[vqa] I want to know how many shapes are shown"]),
    (VQA_PATTERNS["exists"], ["[vqa] I need to know if a {0} {1} is there",
                              "[vqa] I'm not sure; is there a {0} {1}?",
                              "[vqa] there might be a {0} {1}. Is there?",
                              "[vqa] I want to know whether the image has a {0} {1}"]),
]
# the seventh held-out set (issue #31, written 2026-12-06 before any sixth round of training wordings; sets 4 to 6
# had been looked at wording by wording that day, unseen until set 8 was written): sentences to complete, and
# questions with a hint about the answer's form
V7_BY_TASK = {
    "refer": ["[refer] the {} is located at:", "[refer] where is the {}? answer with a box",
              "[refer] box of the {} =", "[refer] locate the {} and reply only with coordinates",
              "[refer] position of the {}, as a bounding box:"],
    "identify": ["[identify] the object at {} is a", "[identify] what is at {}? answer with its color and shape",
                 "[identify] {} contains:", "[identify] name what is inside {}, two words only",
                 "[identify] object in region {} ="],
    "detection": ["[detection] all {} shapes, with boxes:", "[detection] where are the {} shapes? reply with boxes",
                  "[detection] boxes of every {} =", "[detection] list each {} and its box",
                  "[detection] the {} shapes are at:"],
    "caption": ["[caption] this image shows", "[caption] describe the picture; keep it short",
                "[caption] the picture contains:", "[caption] what is in the image? one sentence please",
                "[caption] summary of the image ="],
    "grounding": ["[grounding] the shapes and where they are:", "[grounding] describe the image; give a box for "
                  "each shape", "[grounding] objects in this image, with locations =",
                  "[grounding] what is in the picture and where? reply with boxes",
                  "[grounding] this image shows, with boxes:"],
}
V7_VQA = [
    (VQA_PATTERNS["color"], ["[vqa] the {0} is colored", "[vqa] what color is the {0}? one word",
                             "[vqa] color of the {0} =", "[vqa] which color has the {0}? answer with a color"]),
    (VQA_PATTERNS["shape"], ["[vqa] the {0} object is a", "[vqa] what shape is the {0} object? one word",
                             "[vqa] shape of the {0} object =", "[vqa] which shape is {0}? answer with a shape"]),
    (VQA_PATTERNS["count"], ["[vqa] the number of shapes here is", "[vqa] how many shapes? answer with a number",
                             "[vqa] shape count =", "[vqa] count the shapes and reply with one word"]),
    (VQA_PATTERNS["exists"], ["[vqa] there is a {0} {1}: yes or no", "[vqa] is there a {0} {1}? answer yes or no",
                              "[vqa] {0} {1} present =", "[vqa] does the image have a {0} {1}? one word"]),
]
# the eighth held-out set (issue #31, written 2026-12-06 after set 7 had been read and before any seventh round of
# training wordings, so it is the one still unseen): the request framed rather than asked: a Q/A frame, a stated
# purpose ("for a quiz"), the user in the third person, a task announcement ("next task."), a label ("... needed")
V8_BY_TASK = {
    "refer": ["[refer] Q: where is the {}? A:", "[refer] for a game, point out the {}",
              "[refer] the user wants the box of the {}.", "[refer] next task. Find the {}.", "[refer] box needed: {}"],
    "identify": ["[identify] Q: what is at {}? A:", "[identify] for a quiz, name the object at {}",
                 "[identify] the user wants to know what is at {}.", "[identify] next task. Say what {} holds.",
                 "[identify] name needed: {}"],
    "detection": ["[detection] Q: where are the {} shapes? A:", "[detection] for a game, point out every {}",
                  "[detection] the user wants boxes for each {}.", "[detection] next task. Find all {} shapes.",
                  "[detection] boxes needed: {}"],
    "caption": ["[caption] Q: what does the image show? A:", "[caption] for a quiz, describe the picture",
                "[caption] the user wants a short caption.", "[caption] next task. Describe the image.",
                "[caption] caption needed"],
    "grounding": ["[grounding] Q: what is shown, and where? A:",
                  "[grounding] for a game, describe the picture with a box per shape",
                  "[grounding] the user wants a description with boxes.",
                  "[grounding] next task. Describe the image and locate each shape.",
                  "[grounding] grounded caption needed"],
}
V8_VQA = [
    (VQA_PATTERNS["color"], ["[vqa] Q: what color is the {0}? A:", "[vqa] for a quiz, name the color of the {0}",
                             "[vqa] the user wants the {0}'s colour.", "[vqa] next task. Say what color the {0} is."]),
    (VQA_PATTERNS["shape"], ["[vqa] Q: what shape is the {0} object? A:",
                             "[vqa] for a quiz, name the shape of the {0} object",
                             "[vqa] the user wants the shape of the {0} thing.",
                             "[vqa] next task. Say which shape is {0}."]),
    (VQA_PATTERNS["count"], ["[vqa] Q: how many shapes are there? A:", "[vqa] for a quiz, count the shapes",
                             "[vqa] the user wants the number of shapes.",
                             "[vqa] next task. Say how many objects there are."]),
    (VQA_PATTERNS["exists"], ["[vqa] Q: is there a {0} {1}? A:", "[vqa] for a quiz, is a {0} {1} in the picture?",
                              "[vqa] the user wants to know if there is a {0} {1}.",
                              "[vqa] next task. Say whether a {0} {1} is shown."]),
]
# the ninth held-out set (issue #31, written 2026-12-06, seventh session, before any seventh round of training
# wordings and without reading set 8): a formal, technical register ("kindly", "depicted", "therein", "enumerate")
# and the subject put first, before what is asked about it
V9_BY_TASK = {
    "refer": ["[refer] Kindly return the bounding box enclosing the {}.", "[refer] {}: its coordinates, please",
              "[refer] Determine the region occupied by the {}.", "[refer] regarding the {}, where is it situated?",
              "[refer] provide the spatial extent of the {}"],
    "identify": ["[identify] Region {}: classify the object therein.", "[identify] Kindly name the object within {}.",
                 "[identify] regarding region {}, which object occupies it?",
                 "[identify] Determine the object depicted at {}.", "[identify] {}, which object is this?"],
    "detection": ["[detection] Kindly return bounding boxes for every {}.", "[detection] {}: all instances, please",
                  "[detection] Determine the regions of all {} shapes.",
                  "[detection] regarding each {}, where is it situated?",
                  "[detection] enumerate the {} instances with their boxes"],
    "caption": ["[caption] Kindly provide a concise description of the image.",
                "[caption] Determine what the image depicts.", "[caption] regarding this image, what does it show?",
                "[caption] a brief account of the depicted scene, please",
                "[caption] enumerate the depicted shapes in one sentence"],
    "grounding": ["[grounding] Kindly describe the image, with a bounding box for each shape.",
                  "[grounding] Determine what is depicted and the region of each shape.",
                  "[grounding] regarding this image, describe its shapes and their positions",
                  "[grounding] an account of the depicted scene, each shape with its coordinates",
                  "[grounding] enumerate the depicted shapes together with their boxes"],
}
V9_VQA = [
    (VQA_PATTERNS["color"], ["[vqa] Kindly state the colour of the {0}.", "[vqa] the {0}: its color?",
                             "[vqa] Determine the hue of the {0}.", "[vqa] regarding the {0}, which colour is it?"]),
    (VQA_PATTERNS["shape"], ["[vqa] Kindly state the shape of the {0} object.", "[vqa] the {0} object: its shape?",
                             "[vqa] Determine the geometric form of the {0} object.",
                             "[vqa] regarding the {0} object, which shape is it?"]),
    (VQA_PATTERNS["count"], ["[vqa] Kindly state the quantity of shapes depicted.", "[vqa] shapes depicted: how many?",
                             "[vqa] Determine the number of shapes present.",
                             "[vqa] regarding the shapes, how many are depicted?"]),
    (VQA_PATTERNS["exists"], ["[vqa] Kindly state whether a {0} {1} is depicted.", "[vqa] a {0} {1}: present or not?",
                              "[vqa] Determine whether the image contains a {0} {1}.",
                              "[vqa] regarding a {0} {1}, is one depicted?"]),
]
# the tenth held-out set (issue #31, written 2026-12-06 before the word-noise pilot was scored, without reading sets 8
# and 9): English as a learner writes it: articles dropped, "how much" for "how many", wrong prepositions and verb
# forms ("which color have the circle?", "what you see on image?")
V10_BY_TASK = {
    "refer": ["[refer] where stay the {}?", "[refer] show me place of {}", "[refer] in which place is {}?",
              "[refer] please find where {} is being", "[refer] {} is where on picture?"],
    "identify": ["[identify] what is thing in {}?", "[identify] tell what object stay at {}",
                 "[identify] in {} is which thing?", "[identify] what there is inside {}?",
                 "[identify] say me the object of {}"],
    "detection": ["[detection] find all {} please and give box each", "[detection] where are being the {}s?",
                  "[detection] show me every {} on picture", "[detection] all {}s, where they are?",
                  "[detection] search each {} in image"],
    "caption": ["[caption] say me what is in picture", "[caption] what you see on image?",
                "[caption] please describe me this picture", "[caption] what there is on the image?",
                "[caption] make small description of image"],
    "grounding": ["[grounding] tell what is on picture and where is it", "[grounding] describe me image with boxes",
                  "[grounding] what you see and in which place?", "[grounding] say all shapes and place of them",
                  "[grounding] explain me the picture, where is every shape"],
}
V10_VQA = [
    (VQA_PATTERNS["color"], ["[vqa] which color have the {0}?", "[vqa] {0} is which color?",
                             "[vqa] what is color of {0}?", "[vqa] say me color of the {0}"]),
    (VQA_PATTERNS["shape"], ["[vqa] {0} thing have what shape?", "[vqa] what is shape of {0} thing?",
                             "[vqa] the {0} one is which form?", "[vqa] say me shape of {0} object"]),
    (VQA_PATTERNS["count"], ["[vqa] how much shapes is there?", "[vqa] how much objects are on picture?",
                             "[vqa] what is number of shapes?", "[vqa] shapes are how much?"]),
    (VQA_PATTERNS["exists"], ["[vqa] there is {0} {1}?", "[vqa] is having {0} {1} on picture?",
                              "[vqa] you see {0} {1} or not?", "[vqa] exist a {0} {1} in image?"]),
]
# the eleventh held-out set (issue #31, written 2026-12-07, tenth session, before any further training wordings and
# with the training wordings not open): the request inside chat filler, lowercase as typed in a chat box: a greeting
# ("hi!", "hey,", "hello."), "quick question:", "ok so", "sorry to bother you,", a "thanks" after it
V11_BY_TASK = {
    "refer": ["[refer] hi! quick question: where's the {}? thanks", "[refer] hey, can you show me the {} please",
              "[refer] ok so I'm trying to find the {}, where is it?",
              "[refer] hello. the {}, where is it in the picture? thank you!",
              "[refer] sorry to bother you, could you mark the {}?"],
    "identify": ["[identify] hi! quick question: what's at {}? thanks", "[identify] hey, what is that thing at {}?",
                 "[identify] ok so there's something at {}, what is it?",
                 "[identify] hello. what object sits at {}? thank you!",
                 "[identify] sorry to bother you, what's inside {}?"],
    "detection": ["[detection] hi! quick question: where are all the {} shapes? thanks",
                  "[detection] hey, can you box every {} please",
                  "[detection] ok so I need each {} found, where are they?",
                  "[detection] hello. every {} in the picture, where? thank you!",
                  "[detection] sorry to bother you, could you mark each {}?"],
    "caption": ["[caption] hi! quick question: what's in this picture? thanks",
                "[caption] hey, can you tell me what this image shows please",
                "[caption] ok so what does this picture show?",
                "[caption] hello. a short description of the image, please. thank you!",
                "[caption] sorry to bother you, what can you see in it?"],
    "grounding": ["[grounding] hi! quick question: what's in this picture and where? thanks",
                  "[grounding] hey, can you describe the image and box each shape please",
                  "[grounding] ok so I need every shape described with its location",
                  "[grounding] hello. describe the picture with boxes, please. thank you!",
                  "[grounding] sorry to bother you, what's shown and where is each one?"],
}
V11_VQA = [
    (VQA_PATTERNS["color"], ["[vqa] hi! quick question: what colour is the {0}? thanks",
                             "[vqa] hey, the {0}, what color is it?", "[vqa] ok so which colour does the {0} have?",
                             "[vqa] sorry to bother you, what's the color of the {0}?"]),
    (VQA_PATTERNS["shape"], ["[vqa] hi! quick question: what shape is the {0} one? thanks",
                             "[vqa] hey, the {0} object, what shape is it?", "[vqa] ok so which shape is the {0} thing?",
                             "[vqa] sorry to bother you, what's the shape of the {0} object?"]),
    (VQA_PATTERNS["count"], ["[vqa] hi! quick question: how many shapes are there? thanks",
                             "[vqa] hey, how many objects can you count?",
                             "[vqa] ok so how many shapes does the picture have?",
                             "[vqa] sorry to bother you, what's the number of shapes?"]),
    (VQA_PATTERNS["exists"], ["[vqa] hi! quick question: is there a {0} {1}? thanks",
                              "[vqa] hey, do you see a {0} {1} anywhere?", "[vqa] ok so is a {0} {1} in the picture?",
                              "[vqa] sorry to bother you, is there any {0} {1} here?"]),
]
SETS = {1: (BY_TASK, VQA), 2: (V2_BY_TASK, V2_VQA), 3: (V3_BY_TASK, V3_VQA), 4: (V4_BY_TASK, V4_VQA),
        5: (V5_BY_TASK, V5_VQA), 6: (V6_BY_TASK, V6_VQA), 7: (V7_BY_TASK, V7_VQA),
        8: (V8_BY_TASK, V8_VQA), 9: (V9_BY_TASK, V9_VQA), 10: (V10_BY_TASK, V10_VQA),
        11: (V11_BY_TASK, V11_VQA)}


def all_wordings(version: int | None = None) -> list[str]:
    """Every held-out wording of one set (None: all sets; for the tests that keep them out of training)."""
    if version is None:
        return [w for v in SETS for w in all_wordings(v)]
    by_task, vqa = SETS[version]
    return [w for ws in by_task.values() for w in ws] + [w for _, ws in vqa for w in ws]


def heldout_prompt(task: str, content: str | None, rng: random.Random, version: int = 1) -> str:
    """A held-out wording of one synthetic bench prompt: `content` is the name / box / shape / VQA question;
    `version`: which held-out set (1 to 11)."""
    by_task, vqa = SETS[version]
    if task == "vqa":
        for pattern, wordings in vqa:
            m = re.match(pattern, content or "")
            if m:
                return rng.choice(wordings).format(*m.groups())
        raise ValueError(f"not a synthetic VQA question: {content!r}")
    return rng.choice(by_task[task]).format(content)
