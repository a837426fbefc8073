"""The int8 embedder's calibration: how large each projection's inputs get.

A projection's int8 form quantizes its input with one scale per call (the whole tokens x
width matrix). BERT's activations have a few channels far larger than the rest, and one
scale for all leaves the small channels with a handful of levels. The int8 runtime
(:mod:`broker.cache.minilm_onnx`) therefore moves part of each channel's range into the
weights (SmoothQuant: ``x @ W == (x / s) @ (s * W)``), and needs each channel's largest
magnitude to choose ``s``. They are measured here at load time, by running the float32
reference (:class:`broker.cache.embed.MiniLM`) over a fixed set of everyday requests of
the kinds a chat cache sees. None of them is in the labelled set the tests measure
decisions on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from broker.cache.embed import MiniLM, Vector

__all__ = ["SENTENCES", "activation_ranges"]

SENTENCES = (
    "Can you help me write a short email asking my landlord to fix the heating?",
    "Summarise the main arguments for and against a four-day working week.",
    "What are the side effects of taking ibuprofen every day?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Why does my React component render twice in development mode?",
    "How many tablespoons are in a quarter cup?",
    "Translate 'where is the train station' into Spanish.",
    "Explain the difference between TCP and UDP for a beginner.",
    "Give me three ideas for a vegetarian dinner that takes under 30 minutes.",
    "What happened at the Battle of Hastings in 1066?",
    "Is it safe to leave cooked rice out overnight?",
    "Refactor this loop: for i in range(len(items)): print(items[i])",
    "How do I undo the last commit in git without losing my changes?",
    "What is 17% of 2,340 dollars?",
    "Recommend a good book about the history of mathematics.",
    "My laptop fan is loud all the time, what could cause that?",
    "Draft a polite reply declining a meeting invitation for Thursday at 3pm.",
    "What's the best way to store fresh basil so it doesn't wilt?",
    "Compare PostgreSQL and MySQL for a small web application.",
    "How long should I boil an egg for a runny yolk?",
    "Write a haiku about autumn rain in Kyoto.",
    "What does the error 'ModuleNotFoundError: No module named numpy' mean?",
    "Can dogs eat grapes?",
    "List the planets of the solar system in order from the Sun.",
    "How do vaccines train the immune system?",
    "Suggest a name for a coffee shop near the university campus.",
    "Calculate the monthly payment on a 250000 loan at 4.5% over 30 years.",
    "Explain recursion as if I were ten years old.",
    "Which is heavier, a kilogram of feathers or a kilogram of steel?",
    "Was ist der Unterschied zwischen einem Virus und einem Bakterium?",
    "Quelle est la meilleure saison pour visiter Lisbonne ?",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 5; what does it return?",
    "I feel tired every afternoon even after sleeping eight hours. Any advice?",
    "Write a cover letter opening for a junior data analyst position at Acme Corp.",
    "What is the time complexity of binary search, and why?",
    "How do I convert a string to a datetime in JavaScript?",
    "Tell me a fun fact about octopuses.",
    "Outline a 5-day workout plan for someone new to the gym.",
    "What is the GDP of Japan compared to Germany?",
    "Please proofread: 'Their going to the park tomorow, weather permitting.'",
    "Why is the sky blue during the day but red at sunset?",
    "Create a regular expression that matches a UK postcode.",
    "What should I pack for a week of hiking in the Scottish Highlands in May?",
    "Explain how a transformer neural network uses attention, step by step, with an example"
    " of a short sentence being encoded, and say why positional information is needed.",
    "Our team's sprint velocity dropped from 40 to 25 points over three sprints; list likely"
    " causes and what a manager could ask in the retrospective.",
)


def activation_ranges(weights: dict[str, npt.NDArray[Any]], tokenizer: Any) -> dict[str, Vector]:
    """Each projection's largest input magnitude per channel over :data:`SENTENCES`, by the
    projection's name (see :meth:`broker.cache.embed.MiniLM.trace`)."""
    reference = MiniLM(weights, tokenizer)
    ranges: dict[str, Vector] = {}

    def observe(name: str, x: Vector) -> None:
        largest = np.abs(x).max(0)
        seen = ranges.get(name)
        ranges[name] = largest if seen is None else np.maximum(seen, largest)

    for sentence in SENTENCES:
        reference.trace(sentence, observe)
    return ranges
