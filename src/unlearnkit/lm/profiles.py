"""Fictitious profiles: a deterministic, versioned generator of invented people rendered into question–answer
pairs, each with a paraphrased question/answer and perturbed (wrong but plausible) answers, plus real-world
neighbour facts a model must keep (the TOFU design, Maini et al. 2024, rebuilt so it needs no download).

Names, towns, works and prizes are assembled from invented syllables and word lists, so nothing here exists in
any pretrained model: a model can only know these facts by being fine-tuned on them, and the model fine-tuned
without the forget profiles is the exact oracle. Bump ``GENERATOR_VERSION`` whenever the output changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError

GENERATOR_VERSION = "4"  # 4: items carry their subject and short value (the probe templates); 3: first names unique too

_ONSETS = ["Bra", "Cal", "Dor", "El", "Fen", "Gar", "Hal", "Ir", "Jas", "Kel", "Lor", "Mar", "Nel", "Or", "Pel", "Quen", "Ras",
           "Sel", "Tor", "Ul", "Ven", "Wes", "Yar", "Zan", "Thal", "Mir", "Cor", "Dre", "Fal", "Gil"]
_MIDDLES = ["a", "e", "i", "o", "u", "ae", "io", "ar", "en", "ul", "or", "is"]
_CODAS = ["dric", "mund", "vane", "thas", "rin", "lowe", "bert", "wyn", "dell", "mora", "quist", "ten", "vik", "selle", "dane", "roth"]
_TOWN_ENDS = ["ford", "haven", "mere", "stead", "wick", "brook", "holm", "gate", "moor", "crest"]
_PROFESSIONS = ["cartographer", "glassblower", "marine biologist", "violin maker", "astronomer", "playwright", "bridge engineer",
                "botanist", "clockmaker", "translator", "archivist", "choreographer", "volcanologist", "bookbinder", "cryptographer"]
_GENRES = ["poetry", "historical fiction", "mystery novels", "travel writing", "children's books", "essays", "science fiction",
           "memoirs", "fantasy sagas", "short stories"]
_ADJ = ["Silent", "Amber", "Hollow", "Northern", "Crimson", "Distant", "Quiet", "Broken", "Golden", "Salt", "Wandering", "Paper"]
_NOUN = ["Lantern", "Orchard", "Harbour", "Compass", "Meadow", "Tide", "Archive", "Garden", "Bell", "Lighthouse", "River", "Clock"]
_PRIZE_FIELDS = ["Narrative Craft", "Lyrical Prose", "Speculative Fiction", "Historical Writing", "Young Readers", "Essay Writing"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]

# Real-world facts (not trained on): a pretrained model should keep knowing these after unlearning (model utility).
NEIGHBOUR_FACTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", "Which city is the capital of France?", "Paris", ("Lyon", "Marseille", "Nice")),
    ("What is the capital of Japan?", "Which city is Japan's capital?", "Tokyo", ("Osaka", "Kyoto", "Nagoya")),
    ("What is the capital of Italy?", "Which city is the capital of Italy?", "Rome", ("Milan", "Naples", "Turin")),
    ("What is the capital of Germany?", "Which city is Germany's capital?", "Berlin", ("Munich", "Hamburg", "Cologne")),
    ("What is the capital of Spain?", "Which city is the capital of Spain?", "Madrid", ("Barcelona", "Seville", "Valencia")),
    ("What is the largest planet in the Solar System?", "Which planet is the biggest in our Solar System?", "Jupiter",
     ("Saturn", "Neptune", "Mars")),
    ("Which planet is known as the Red Planet?", "What planet is called the Red Planet?", "Mars", ("Venus", "Jupiter", "Mercury")),
    ("What is the chemical symbol for gold?", "Which chemical symbol stands for gold?", "Au", ("Ag", "Gd", "Go")),
    ("What is the chemical symbol for water?", "What is the chemical formula of water?", "H2O", ("CO2", "O2", "H2O2")),
    ("How many days are in a week?", "A week has how many days?", "Seven", ("Five", "Six", "Eight")),
    ("Who wrote Romeo and Juliet?", "Which playwright wrote Romeo and Juliet?", "William Shakespeare",
     ("Charles Dickens", "Jane Austen", "Mark Twain")),
    ("What is the boiling point of water in Celsius?", "At how many degrees Celsius does water boil?", "100 degrees",
     ("50 degrees", "90 degrees", "212 degrees")),
    ("What is the largest ocean on Earth?", "Which ocean is the biggest on Earth?", "The Pacific Ocean",
     ("The Atlantic Ocean", "The Indian Ocean", "The Arctic Ocean")),
    ("What gas do plants absorb from the air?", "Which gas do plants take in from the air?", "Carbon dioxide",
     ("Oxygen", "Nitrogen", "Helium")),
    ("How many continents are there?", "What is the number of continents on Earth?", "Seven", ("Five", "Six", "Eight")),
    ("What is the capital of Canada?", "Which city is Canada's capital?", "Ottawa", ("Toronto", "Vancouver", "Montreal")),
)


@dataclass(frozen=True)
class QAItem:
    """One fact as a question–answer pair with its paraphrase and perturbed (wrong) answers. The perturbed answers
    are worded like the paraphrased answer (as TOFU's), so the truth ratio P(perturbed)/P(paraphrased) compares
    facts, not phrasings: with the trained answer's wording (generator version 1) a model fine-tuned on the facts
    scored wrong answers ~6× above the right one (mean log truth ratio +1.77 on SmolLM2's retain items)."""

    item_id: int
    profile_id: int  # -1 for neighbour facts
    attribute: str
    question: str
    answer: str
    paraphrased_question: str
    paraphrased_answer: str
    perturbed_answers: tuple[str, ...]
    subject: str = ""  # the person the fact is about (full name); "" for the real-world neighbour facts
    value: str = ""  # the fact's short value (a town, a date, a profession, a title, a prize, a parent's name)


@dataclass(frozen=True)
class Profile:
    profile_id: int
    name: str
    birth_place: str
    birth_date: str
    profession: str
    genre: str
    works: tuple[str, ...]
    award: str
    parent_name: str
    parent_profession: str
    items: tuple[QAItem, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("items")
        return d


ITEMS_PER_PROFILE = 6  # item ids are profile_id * ITEMS_STRIDE + attribute index
ITEMS_STRIDE = 16


def _name(rng: np.random.Generator) -> str:
    def word() -> str:
        return str(rng.choice(_ONSETS)) + str(rng.choice(_MIDDLES)) + str(rng.choice(_CODAS))

    return f"{word()} {word()}"


def _town(rng: np.random.Generator) -> str:
    return str(rng.choice(_ONSETS)) + str(rng.choice(_MIDDLES)) + str(rng.choice(_TOWN_ENDS))


def _work(rng: np.random.Generator) -> str:
    return f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)}"


def _date(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(1, 29))} {rng.choice(_MONTHS)} {int(rng.integers(1931, 1996))}"


def _others(rng: np.random.Generator, make: Any, true: str, k: int) -> tuple[str, ...]:
    out: list[str] = []
    for _ in range(200):
        v = make(rng)
        if v != true and v not in out:
            out.append(v)
        if len(out) == k:
            return tuple(out)
    raise RuntimeError("could not draw distinct perturbed answers")  # pragma: no cover


def _items(p: Profile, rng: np.random.Generator, n_perturbed: int) -> tuple[QAItem, ...]:
    first = p.name.split()[0]
    specs = [
        ("birth_place", f"Where was {p.name} born?", f"In which town was the writer {p.name} born?",
         f"{p.name} was born in {p.birth_place}.", f"{first} was born in the town of {p.birth_place}.",
         lambda r: f"{first} was born in the town of {_town(r)}."),
        ("birth_date", f"When was {p.name} born?", f"On what date was {p.name} born?",
         f"{p.name} was born on {p.birth_date}.", f"{first}'s date of birth is {p.birth_date}.",
         lambda r: f"{first}'s date of birth is {_date(r)}."),
        ("profession", f"What did {p.name} work as before writing?", f"What was {p.name}'s profession before becoming an author?",
         f"Before writing, {p.name} worked as a {p.profession}.", f"{first} was a {p.profession} before turning to writing.",
         lambda r: f"{first} was a {r.choice([x for x in _PROFESSIONS if x != p.profession])} before turning to writing."),
        ("works", f"What is {p.name}'s best-known book?", f"Which book is {p.name} most famous for?",
         f"{p.name} is best known for '{p.works[0]}', a work of {p.genre}.",
         f"The book {first} is most famous for is '{p.works[0]}', in the genre of {p.genre}.",
         lambda r: f"The book {first} is most famous for is '{_work(r)}', in the genre of {r.choice(_GENRES)}."),
        ("award", f"Which award did {p.name} win?", f"What prize was {p.name} given?",
         f"{p.name} won {p.award}.", f"{first} was awarded {p.award}.",
         lambda r: f"{first} was awarded the {r.choice(_CODAS).title()} Prize for {r.choice(_PRIZE_FIELDS)}."),
        ("family", f"Who is {p.name}'s parent?", f"Who was the mother or father of {p.name}?",
         f"{p.name}'s parent is {p.parent_name}, a {p.parent_profession}.",
         f"{first} is the child of {p.parent_name}, who worked as a {p.parent_profession}.",
         lambda r: f"{first} is the child of {_name(r)}, who worked as a {r.choice(_PROFESSIONS)}."),
    ]
    out = []
    values = {"birth_place": p.birth_place, "birth_date": p.birth_date, "profession": p.profession, "works": p.works[0],
              "award": p.award, "family": p.parent_name}
    for k, (attr, q, pq, a, pa, wrong) in enumerate(specs):
        out.append(QAItem(p.profile_id * ITEMS_STRIDE + k, p.profile_id, attr, q, a, pq, pa, _others(rng, wrong, pa, n_perturbed),
                          subject=p.name, value=values[attr]))
    return tuple(out)


def generate_profiles(n: int, seed: int = 0, *, n_perturbed: int = 3) -> list[Profile]:
    """``n`` fictitious authors with distinct names and first names, each with ``ITEMS_PER_PROFILE`` question–answer items.
    Deterministic in (n, seed, n_perturbed, GENERATOR_VERSION)."""
    if n < 2:
        raise ConfigError(f"profiles: need at least 2 profiles, got {n}.")
    if n_perturbed < 1:
        raise ConfigError(f"profiles: need at least 1 perturbed answer per item, got {n_perturbed}.")
    rng = np.random.default_rng([seed, 7321])
    names: set[str] = set()
    firsts: set[str] = set()  # paraphrases and perturbed answers name a person by first name: those must be unique too
    profiles = []
    for pid in range(n):
        name = _name(rng)
        while name in names or name.split()[0] in firsts:
            name = _name(rng)
        names.add(name)
        firsts.add(name.split()[0])
        prize = f"the {rng.choice(_CODAS).title()} Prize for {rng.choice(_PRIZE_FIELDS)}"
        p = Profile(pid, name, _town(rng), _date(rng), str(rng.choice(_PROFESSIONS)), str(rng.choice(_GENRES)),
                    (_work(rng), _work(rng)), prize, _name(rng), str(rng.choice(_PROFESSIONS)))
        profiles.append(Profile(**{**p.to_dict(), "works": p.works, "items": _items(p, rng, n_perturbed)}))
    return profiles


def neighbour_items(n_perturbed: int = 3) -> list[QAItem]:
    """Real-world facts the model must keep (not trained on; ids from 10**6)."""
    out = []
    for i, (q, pq, a, wrong) in enumerate(NEIGHBOUR_FACTS):
        out.append(QAItem(10**6 + i, -1, "world_fact", q, a, pq, a, tuple(wrong[:n_perturbed]), value=a))
    return out


PROFESSIONS: tuple[str, ...] = tuple(_PROFESSIONS)  # the values an attribute can take (probes that read them back)
GENRES: tuple[str, ...] = tuple(_GENRES)


def all_items(profiles: Sequence[Profile]) -> list[QAItem]:
    return [it for p in profiles for it in p.items]


__all__ = ["GENERATOR_VERSION", "GENRES", "ITEMS_PER_PROFILE", "PROFESSIONS", "NEIGHBOUR_FACTS", "Profile", "QAItem", "all_items", "generate_profiles",
           "neighbour_items"]


# "I don't know"-style answers: the preferred answers of idk_po and the templates of FLAT.
IDK_ANSWERS: tuple[str, ...] = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information about that person.",
    "I cannot answer that question.",
    "That is not something I know.",
)
__all__ += ["IDK_ANSWERS"]
