"""Deterministic generator of the miniature instruction data.

The offline stand-in for Dolly and the four extra test sets.

Every example has the fields of the paper's processed files (PAPER.md section 4): ``instruction``, ``input``
(empty string when there is none), ``output`` (a string, or a list of references for the S-NI and UnNI roles),
``prompt`` (the Alpaca template) and ``family`` (the task family, for diagnostics).

The data describe an invented world, so that no model starts with the knowledge and a larger model has something
to memorise that a smaller one learns less well:

Task families of the training set (and of the dev set and the Dolly-role test set, which hold out instances):
- ``fact``: one attribute (city, job, pet, colour, age) of one of ``n_people`` invented people, asked with a
  question phrasing (a core question in a request style). Every fact appears in training under three phrasings;
  a held-out question still has two of them in training, so it tests recall of memorised facts, not guessing.
- ``profile``: a several-sentence profile of a person, which combines all five facts (profiles of half the people
  are in training; the other half are the VicunaEval role).
- ``arithmetic``: one- and two-step additions, subtractions and small multiplications, answered with the steps.
- ``spelling``: spell a word letter by letter, forwards or backwards, or sort words alphabetically (multi-step
  string operations that a small model learns less well).
- ``passage``: read a short passage (the ``input``) about a stranger and answer a question about it.
- ``numbers``: largest, smallest or sum of a short list of numbers given as ``input``.

The five test sets play the roles of the paper's five:
- ``dolly``: held-out instances of the training families, with training phrasings.
- ``selfinst``: fact questions in phrasings that never occur in training (unseen combinations of a core question
  and a request style).
- ``vicuna``: long, open-ended answers: profiles of the people whose profile is not in training, to be composed
  from the facts learned one by one.
- ``sni``: passage tasks with an input and several references each.
- ``unni``: unseen combinations of families (a memorised fact combined with arithmetic or with spelling; arithmetic
  on a number read from a passage), each with several references.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from .io import write_jsonl
from .names import TEST_SETS
from .prompts import build_prompt

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "k", "kl", "l", "m", "n", "p", "qu", "r", "s", "st", "t", "th",
           "v", "z", "zh"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "io", "ou"]
_CODAS = ["", "", "n", "l", "r", "s", "th", "x", "m"]

JOBS = ["baker", "pilot", "farmer", "painter", "teacher", "doctor", "sailor", "miner", "weaver", "potter",
        "singer", "judge", "tailor", "hunter", "brewer", "clockmaker", "gardener", "librarian", "carpenter",
        "fisher"]
PETS = ["cat", "dog", "parrot", "goat", "rabbit", "turtle", "owl", "lizard", "hamster", "ferret", "pony", "snake"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "silver", "black", "white", "brown", "pink",
           "grey"]
WORDS = ["apple", "river", "stone", "candle", "garden", "window", "silver", "forest", "pocket", "ladder",
         "planet", "button", "mirror", "basket", "rocket", "castle", "pencil", "bridge", "dragon", "meadow",
         "harbor", "lantern", "violin", "tunnel", "cookie", "feather", "island", "marble", "needle", "orange",
         "puzzle", "saddle", "tomato", "wagon", "zebra", "anchor", "bucket", "copper", "desert", "engine"]

ATTRIBUTES = ("city", "job", "pet", "colour", "age")

# A question is a core phrasing wrapped in a request style. Training sees most (core, style) combinations; the
# SelfInst role asks with the held-out combinations: new phrasings made of familiar parts, which a model trained
# from scratch can learn to read (a pretrained model reads any phrasing; a miniature one only recombines).
FACT_CORES = {
    "city": ["Where does {name} live?", "In which city does {name} live?", "Name the home city of {name}."],
    "job": ["What is the job of {name}?", "What does {name} do for work?", "Name the profession of {name}."],
    "pet": ["What pet does {name} have?", "Which animal does {name} keep as a pet?", "Name the pet of {name}."],
    "colour": ["What is the favourite colour of {name}?", "Which colour does {name} like best?",
               "Name the favourite colour of {name}."],
    "age": ["How old is {name}?", "What is the age of {name}?", "Tell me the age of {name}."],
}
PROFILE_CORES = ["Write a short profile of {name}.", "Describe {name} in a few sentences.",
                 "Tell me everything you know about {name}."]
STYLES = ["{q}", "{q} Answer in one sentence.", "Quick question: {q}", "{q} Please be brief.",
          "I need to know this. {q}"]


def phrasings(cores: list[str], group: int, held_out: bool) -> list[str]:
    """The (core, style) phrasings of a question group: the held-out ones (SelfInst role) or the training ones.

    Combination (core c, style s) of group g is held out when (g + c + s) is a multiple of the number of styles,
    so every core and every style also occurs in training.
    """
    return [style.format(q=core) for c, core in enumerate(cores) for s, style in enumerate(STYLES)
            if ((group + c + s) % len(STYLES) == 0) == held_out]


FACT_ANSWERS = {
    "city": "{name} lives in {city}.",
    "job": "{name} works as a {job}.",
    "pet": "{name} has a pet {pet}.",
    "colour": "The favourite colour of {name} is {colour}.",
    "age": "{name} is {age} years old.",
}
@dataclass(frozen=True)
class Person:
    name: str
    city: str
    job: str
    pet: str
    colour: str
    age: int

    def fields(self) -> dict:
        return {"name": self.name, "city": self.city, "job": self.job, "pet": self.pet, "colour": self.colour,
                "age": self.age}


def _invent_name(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def _unique_names(rng: random.Random, n: int, syllables: int, taken: set[str]) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = _invent_name(rng, syllables)
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def invent_world(seed: int, n_people: int, n_cities: int = 16) -> tuple[list[Person], list[Person]]:
    """Return ``(people, strangers)``: the people whose facts are to be memorised, and four times as many strangers
    that only appear inside passages (their facts are given in the input, never memorised); half of the strangers
    appear in training passages, the other half in the S-NI role's, so that set can hold up to 10 x n_people
    examples (2 x n_people strangers x 5 questions)."""
    rng = random.Random(seed)
    taken: set[str] = set()
    cities = _unique_names(rng, n_cities, 3, taken)

    def person(name: str) -> Person:
        return Person(name, rng.choice(cities), rng.choice(JOBS), rng.choice(PETS), rng.choice(COLOURS),
                      rng.randint(18, 80))

    people = [person(n) for n in _unique_names(rng, n_people, 2, taken)]
    strangers = [person(n) for n in _unique_names(rng, 4 * n_people, 2, taken)]
    return people, strangers


def _example(instruction: str, output, family: str, input: str = "") -> dict:
    return {"instruction": instruction, "input": input, "output": output,
            "prompt": build_prompt(instruction, input), "family": family}


def _fact_answer(p: Person, attr: str) -> str:
    return FACT_ANSWERS[attr].format(**p.fields())


def _profile(p: Person) -> str:
    return (f"{p.name} is {p.age} years old and lives in {p.city}. {p.name} works as a {p.job}. "
            f"At home, {p.name} has a pet {p.pet}. The favourite colour of {p.name} is {p.colour}.")


def _passage(p: Person) -> str:
    return (f"{p.name} is a {p.job} from {p.city}. Every morning {p.name} walks a pet {p.pet} and wears a "
            f"{p.colour} coat. Last spring {p.name} turned {p.age}.")


PASSAGE_QUESTIONS = {
    "job": ("What is the job of the person in the passage?", "{name} is a {job}.", "a {job}"),
    "city": ("Where is the person in the passage from?", "{name} is from {city}.", "{city}"),
    "pet": ("Which animal does the person in the passage walk?", "{name} walks a pet {pet}.", "a {pet}"),
    "colour": ("What colour is the coat in the passage?", "The coat is {colour}.", "{colour}"),
    "age": ("How old is the person in the passage?", "{name} is {age} years old.", "{age}"),
}


def _arithmetic(rng: random.Random) -> dict:
    kind = rng.choice(["add", "sub", "mul", "add_sub", "mul_add"])
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 30)
    if kind == "add":
        return _example(f"What is {a} plus {b}?", f"{a} plus {b} equals {a + b}.", "arithmetic")
    if kind == "sub":
        a, b = max(a, b), min(a, b)
        return _example(f"What is {a} minus {b}?", f"{a} minus {b} equals {a - b}.", "arithmetic")
    if kind == "mul":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return _example(f"What is {a} times {b}?", f"{a} times {b} equals {a * b}.", "arithmetic")
    if kind == "add_sub":
        s = a + b
        return _example(f"Add {a} and {b}, then subtract {c}.",
                        f"{a} plus {b} equals {s}, and {s} minus {c} equals {s - c}.", "arithmetic")
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    m = a * b
    return _example(f"Multiply {a} by {b}, then add {c}.",
                    f"{a} times {b} equals {m}, and {m} plus {c} equals {m + c}.", "arithmetic")


def _spelling(rng: random.Random) -> dict:
    kind = rng.choice(["spell", "backwards", "sort"])
    if kind == "sort":
        words = rng.sample(WORDS, rng.randint(3, 5))
        return _example("Sort these words in alphabetical order.", " ".join(sorted(words)), "spelling",
                        input=" ".join(words))
    word = rng.choice(WORDS + [_invent_name(rng, 2).lower() for _ in range(2)])
    if kind == "spell":
        return _example(f"Spell the word {word} letter by letter.",
                        f"The word {word} is spelled {' '.join(word)}.", "spelling")
    return _example(f"Spell the word {word} backwards.",
                    f"Backwards, {word} is spelled {' '.join(reversed(word))}.", "spelling")


def _numbers(rng: random.Random) -> dict:
    nums = [rng.randint(1, 99) for _ in range(rng.randint(3, 6))]
    listed = ", ".join(map(str, nums))
    kind = rng.choice(["largest", "smallest", "sum"])
    if kind == "largest":
        return _example("Find the largest number in the list.", f"The largest number is {max(nums)}.", "numbers",
                        input=listed)
    if kind == "smallest":
        return _example("Find the smallest number in the list.", f"The smallest number is {min(nums)}.",
                        "numbers", input=listed)
    return _example("Add up all the numbers in the list.", f"The sum is {sum(nums)}.", "numbers", input=listed)


def _passage_example(p: Person, attr: str, references: bool) -> dict:
    question, sentence, short = PASSAGE_QUESTIONS[attr]
    answer = sentence.format(**p.fields())
    output = [answer, short.format(**p.fields())] if references else answer
    return _example(question, output, "passage", input=_passage(p))


def _unseen_combination(rng: random.Random, people: list[Person], strangers: list[Person]) -> dict:
    kind = rng.choice(["age_plus", "spell_city", "spell_pet", "passage_age_sum"])
    if kind == "age_plus":
        p, k = rng.choice(people), rng.randint(2, 20)
        return _example(f"How old will {p.name} be in {k} years?",
                        [f"{p.name} is {p.age} years old, so in {k} years {p.name} will be {p.age + k}.",
                         f"{p.name} will be {p.age + k} years old.", f"{p.age + k}"], "unseen")
    if kind == "spell_city":
        p = rng.choice(people)
        return _example(f"Spell the name of the city where {p.name} lives, letter by letter.",
                        [f"{p.name} lives in {p.city}, which is spelled {' '.join(p.city.lower())}.",
                         " ".join(p.city.lower())], "unseen")
    if kind == "spell_pet":
        p = rng.choice(people)
        return _example(f"Spell the pet animal of {p.name} backwards.",
                        [f"{p.name} has a pet {p.pet}. Backwards, {p.pet} is spelled {' '.join(reversed(p.pet))}.",
                         " ".join(reversed(p.pet))], "unseen")
    p, k = rng.choice(strangers), rng.randint(2, 20)
    return _example(f"Add {k} to the age of the person in the passage.",
                    [f"{p.name} is {p.age} years old, and {p.age} plus {k} equals {p.age + k}.",
                     f"{p.age + k}"], "unseen", input=_passage(p))


def _key(ex: dict) -> tuple[str, str]:
    return ex["instruction"], ex["input"]


def _draw_unique(make, n: int, seen: set, what: str, max_tries: int = 200) -> list[dict]:
    """Call ``make()`` until ``n`` examples with unseen (instruction, input) keys are collected."""
    out: list[dict] = []
    tries = 0
    while len(out) < n:
        ex = make()
        if _key(ex) in seen:
            tries += 1
            if tries > max_tries * max(n, 1):
                raise ValueError(f"could not draw {n} distinct {what} examples; lower the requested size")
            continue
        seen.add(_key(ex))
        out.append(ex)
    return out


def check_sizes(n_people: int, n_train: int, n_dev: int, n_test: dict[str, int]) -> str | None:
    """Why these sizes cannot be generated (None when they can): every person's 15 fact phrasings and the profiles
    of half the people (2 each) are fixed parts of the training, dev and Dolly-role sets, and at least 4 sampled
    examples must remain; the dev and Dolly-role sets draw from the held-out fact phrasings and the sampled tasks."""
    n_fixed = 3 * len(ATTRIBUTES) * n_people + 2 * (n_people // 2)
    n_eval = n_dev + n_test.get("dolly", 0)
    n_sampled = n_train + n_eval - n_fixed
    if n_sampled < 4 or n_eval > len(ATTRIBUTES) * n_people + n_sampled:
        return (f"data.n_train={n_train} is too small for data.n_people={n_people} (facts and profiles alone take "
                f"{n_fixed} examples of the training, dev and Dolly-role sets); raise n_train or lower n_people")
    # Distinct questions each role can ask: SelfInst the 3 held-out phrasings of each person's 5 facts, VicunaEval
    # the 15 profile phrasings of each unprofiled person, S-NI 5 questions about each of its 2 x n_people strangers.
    capacity = {"selfinst": 3 * len(ATTRIBUTES) * n_people, "vicuna": 15 * (n_people - n_people // 2),
                "sni": len(ATTRIBUTES) * 2 * n_people}
    for name, most in capacity.items():
        if n_test.get(name, 0) > most:
            return (f"data.n_test.{name}={n_test[name]} is more than the {most} distinct examples data.n_people="
                    f"{n_people} allows for that set; lower it or raise n_people")
    return None


def generate(seed: int, n_people: int, n_train: int, n_dev: int, n_test: dict[str, int]) -> dict[str, list[dict]]:
    """Generate all splits. Returns ``{"train": [...], "dev": [...], "test/dolly": [...], ...}``.

    Deterministic in ``seed``; no (instruction, input) pair occurs in two splits.
    """
    unknown = set(n_test) - set(TEST_SETS)
    missing = set(TEST_SETS) - set(n_test)
    if unknown or missing:
        raise ValueError(f"data.n_test must give exactly the test sets {list(TEST_SETS)}; "
                         f"unknown {sorted(unknown)}, missing {sorted(missing)}")
    if n_people < 4:
        raise ValueError(f"data.n_people must be at least 4, got {n_people}")
    rng = random.Random(seed + 1)
    people, strangers = invent_world(seed, n_people)
    seen: set = set()

    # Facts: every (person, attribute) is asked with three training phrasings; one of them may be held out for
    # dev/Dolly, so the fact is still seen at least twice in training.
    fact_train, fact_eligible = [], []
    for p in people:
        for g, attr in enumerate(ATTRIBUTES):
            for i, tmpl in enumerate(rng.sample(phrasings(FACT_CORES[attr], g, held_out=False), 3)):
                ex = _example(tmpl.format(name=p.name), _fact_answer(p, attr), "fact")
                seen.add(_key(ex))
                (fact_eligible if i == 0 else fact_train).append(ex)
    half = len(people) // 2
    profiled, unprofiled = people[:half], people[half:]
    profile_group = len(ATTRIBUTES)
    profiles = [_example(tmpl.format(name=p.name), _profile(p), "profile") for p in profiled
                for tmpl in rng.sample(phrasings(PROFILE_CORES, profile_group, held_out=False), 2)]
    seen.update(_key(e) for e in profiles)

    size_problem = check_sizes(n_people, n_train, n_dev, n_test)
    if size_problem:
        raise ValueError(size_problem)
    n_eval = n_dev + n_test["dolly"]
    n_sampled = n_train + n_eval - (len(fact_train) + len(fact_eligible) + len(profiles))
    # Passages use the strangers; the first half of the strangers is kept for the S-NI role.
    train_strangers = strangers[: len(strangers) // 2]
    sni_strangers = strangers[len(strangers) // 2:]
    makers = [
        (0.35, "arithmetic", lambda: _arithmetic(rng)),
        (0.25, "spelling", lambda: _spelling(rng)),
        (0.25, "passage", lambda: _passage_example(rng.choice(train_strangers), rng.choice(ATTRIBUTES), False)),
        (0.15, "numbers", lambda: _numbers(rng)),
    ]
    sampled: list[dict] = []
    for i, (share, what, make) in enumerate(makers):
        n = n_sampled - len(sampled) if i == len(makers) - 1 else round(share * n_sampled)
        sampled += _draw_unique(make, n, seen, what)

    eligible = fact_eligible + sampled
    rng.shuffle(eligible)
    dev, dolly, rest = eligible[:n_dev], eligible[n_dev:n_eval], eligible[n_eval:]
    train = fact_train + profiles + rest
    rng.shuffle(train)

    def new_phrasing() -> dict:
        p, g = rng.choice(people), rng.randrange(len(ATTRIBUTES))
        attr = ATTRIBUTES[g]
        tmpl = rng.choice(phrasings(FACT_CORES[attr], g, held_out=True))
        return _example(tmpl.format(name=p.name), _fact_answer(p, attr), "fact")

    def open_ended() -> dict:
        p = rng.choice(unprofiled)
        tmpl = rng.choice(phrasings(PROFILE_CORES, profile_group, held_out=False)
                          + phrasings(PROFILE_CORES, profile_group, held_out=True))
        return _example(tmpl.format(name=p.name), _profile(p), "profile")

    splits = {"train": train, "dev": dev, "test/dolly": dolly}
    splits["test/selfinst"] = _draw_unique(new_phrasing, n_test["selfinst"], seen, "selfinst")
    splits["test/vicuna"] = _draw_unique(open_ended, n_test["vicuna"], seen, "vicuna")
    splits["test/sni"] = _draw_unique(
        lambda: _passage_example(rng.choice(sni_strangers), rng.choice(ATTRIBUTES), True), n_test["sni"], seen,
        "sni")
    splits["test/unni"] = _draw_unique(lambda: _unseen_combination(rng, people, strangers), n_test["unni"], seen,
                                       "unni")
    return splits


def write_splits(splits: dict[str, list[dict]], out_dir: str | Path) -> dict[str, Path]:
    """Write each split to ``out_dir/<split>.jsonl`` atomically; return the paths."""
    paths = {}
    for name, rows in splits.items():
        path = Path(out_dir) / f"{name}.jsonl"
        write_jsonl(path, rows)
        paths[name] = path
    return paths


def pretraining_corpus(seed: int, n_people: int, n_train: int, n_dev: int, n_test: dict[str, int], worlds: int,
                       world_seed: int) -> tuple[list[dict], dict]:
    """The pretraining corpus of the miniature base models and its report.

    The texts (``{"text": prompt + first reference, "family", "world"}``) are every split of ``worlds`` other seeded
    worlds (data seeds ``world_seed``, ``world_seed + 1``, ...: other people, cities and strangers, the same task
    families), so pretraining teaches the language and the task formats but none of the task's facts. Disjoint from
    the data of world ``seed`` (its training, dev and test sets) by construction: a text is left out when it names a
    person, stranger or city of that world (an invented name can recur across worlds, with other facts) or when its
    prompt is the prompt of one of that world's examples (drawn arithmetic, spelling and number tasks can recur).
    The report counts the texts kept and left out, by reason.
    """
    if seed in range(world_seed, world_seed + worlds):
        raise ValueError(f"pretraining corpus: its worlds {world_seed}..{world_seed + worlds - 1} include the "
                         f"task's own data seed {seed}")
    main = generate(seed, n_people, n_train, n_dev, n_test)
    people, strangers = invent_world(seed, n_people)
    names = {p.name for p in people + strangers} | {p.city for p in people + strangers}
    prompts = {r["prompt"] for rows in main.values() for r in rows}
    texts, report = [], {"kept": 0, "names": 0, "prompts": 0}
    for k in range(worlds):
        for rows in generate(world_seed + k, n_people, n_train, n_dev, n_test).values():
            for r in rows:
                text = r["prompt"] + _references(r)[0]
                if r["prompt"] in prompts:
                    report["prompts"] += 1
                elif names.intersection(re.findall(r"[A-Z][a-z]+", text)):
                    report["names"] += 1
                else:
                    report["kept"] += 1
                    texts.append({"text": text, "family": r["family"], "world": world_seed + k})
    return texts, report


def _references(row: dict) -> list[str]:
    return row["output"] if isinstance(row["output"], list) else [row["output"]]
