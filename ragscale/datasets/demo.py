"""A generated multi-hop QA dataset about an invented world, so the lab works out of the box.

Why generate rather than ship real data: every entity is fictional, so a model cannot answer
from memory and the effect of retrieval (k), demonstrations (m) and iterations (n) shows up
plainly even with a 135M model. The world has countries, cities, universities, people,
organisations and works; each entity gets one short passage (about 40-80 words) stating a few
facts. Questions follow chains of those facts:

- 1 hop: "In which city was Dorava Kest born?" -- one passage answers it (k >= 1 helps);
- 2-3 hops: "In which country was the founder of the Amber Loom Ensemble born?" -- the first
  passage names a bridge entity whose own passage holds the next fact.

Retrieval scaling is designed in. A person's passage names what they founded or made, in the
words the questions use ("Corosk Kromos, the founder of the Juniper Arrow Trading Company, is
an engineer who was born in Purmoor ..."). So a question that starts with a founder/creator hop
retrieves its bridge passage itself, usually at rank 2-10 below the anchor's own passage and
its look-alikes: more documents (k) reach the second hop, one document never does. Places and
schools never list what points to them, so the third hop of a 3-hop question (and the second
of a question that starts at a person or a place) is only reachable by a follow-up query
(IterDRAG's n). The back-links also make a founder's or maker's passage compete with the
1-hop question about that organisation or work, pushing some gold passages below rank 1.

Every other passage of the same kind is a distractor with the same phrasing; people share
surnames and organisations share words, so near-misses are common.

Splits: ``Dataset.questions`` is the test set (240 questions, 80 per hop count, interleaved
1-2-3-1-2-3... so that any prefix is balanced);
``Dataset.pool`` holds 300 training questions for demonstrations. No fact (entity, relation)
used by a test question is used by a pool question, so demonstrations never leak an answer.
Everything comes from one ``random.Random(seed)`` walked in a fixed order: identical on every
run and machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable

from ragscale.datasets.types import Dataset, Document, Question

TEST_PER_HOP = 80
POOL_PER_HOP = 100

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr",
           "tr", "th", "sh", "st", "vel", "mor", "hal", "cor", "ser", "ald", "quin", "ost"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ae", "ia", "ou", "ei"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "nd", "rk", "sk", "m", "v", "x"]
_PLACE_ENDINGS = ["moor", "ford", "holm", "wick", "gate", "haven", "mere", "dale", "stead", "by", "bury",
                  "field", "crest", "port", "vale", "brook", "wyn", "ton"]
_COUNTRY_ENDINGS = ["ia", "land", "ar", "enia", "ovia", "istan", "mark", "ora"]

_PROFESSIONS = ["novelist", "poet", "film director", "singer", "painter",
                "sculptor", "architect", "chemist", "engineer", "cartographer"]
# work kind -> (profession that makes it, verb for "Who ... it?", role noun, past participle)
_WORK_KINDS = {
    "novel": ("novelist", "wrote", "author", "published"),
    "poetry collection": ("poet", "wrote", "author", "published"),
    "film": ("film director", "directed", "director", "released"),
    "album": ("singer", "recorded", "singer", "released"),
    "painting": ("painter", "painted", "painter", "completed"),
}
_WORK_ADJ = ["Glass", "Silent", "Crimson", "Hollow", "Winter", "Paper", "Distant", "Sunken", "Quiet", "Iron",
             "Seventh", "Painted", "Bitter", "Salt", "Burning", "Velvet", "Broken", "Golden", "Lonely", "Pale",
             "Wandering", "Frozen", "Hidden", "Last", "Narrow", "Restless", "Scarlet", "Slow", "Tender", "Wild"]
_WORK_NOUN = ["Orchard", "Harbour", "Lantern", "Staircase", "Meadow", "Mirror", "Garden", "Tide", "Compass",
              "Letters", "Bridge", "Season", "Window", "Carousel", "Lighthouse", "Choir", "Ember", "Kingdom",
              "Threshold", "Archive", "Feather", "Station", "Vineyard", "Parade", "Orbit", "Furnace", "Island",
              "Ledger", "Tapestry", "Harvest"]
_ORG_ADJ = ["Amber", "Copper", "Northwind", "Silver", "Blue", "Red", "Granite", "Cedar", "Falcon", "Lark",
            "Harbor", "Morning", "Ashen", "Juniper", "Marble", "Thistle", "Willow", "Cobalt", "Saffron", "Heron"]
_ORG_NOUN = ["Loom", "Finch", "Anchor", "Kettle", "Lantern", "Arrow", "Bell", "Crown", "Fern", "Gull", "Hammer",
             "Key", "Mill", "Oak", "Quill", "Sail", "Spindle", "Stone", "Wheel", "Wren"]
# org kind -> (description, what it does where it is based)
_ORG_KINDS = {
    "Ensemble": ("chamber music group", "rehearses in a converted grain store"),
    "Players": ("theatre company", "stages four new plays every year"),
    "Trading Company": ("trading company", "runs warehouses along the waterfront"),
    "Football Club": ("football club", "plays its home games at a small riverside ground"),
    "Press": ("publishing house", "prints poetry pamphlets and local histories"),
    "Ironworks": ("manufacturing firm", "casts bells, railings and ship fittings"),
    "Society": ("learned society", "holds monthly lectures open to the public"),
}
_UNI_KINDS = ["Academy", "Institute", "College", "Conservatory", "University"]
_LANGUAGES = ["Orvic", "Telnish", "Marrovan", "Quessic", "Dalmic", "Serrish", "Vendic", "Pallan", "Ostric", "Kavri"]
_PRODUCTS = ["glassworks", "wool markets", "shipyards", "clockmakers", "tea houses", "salt pans", "printing shops",
             "orchards", "copper mines", "potteries", "breweries", "lace makers"]
_FESTIVALS = ["lantern festival", "boat race", "harvest fair", "music week", "kite contest", "winter market"]
_SEASONS = ["spring", "summer", "autumn", "winter"]
_TRAITS = ["patient", "stubborn", "generous", "meticulous", "restless", "witty", "reserved", "curious", "exacting"]
_CAREER = [
    "worked on commissions for private collectors",
    "taught evening classes for nearly two decades",
    "kept a small studio above a bakery",
    "travelled widely to study older masters",
    "collaborated with many younger colleagues",
    "wrote essays about method and craft",
]
_WORK_FILLER = [
    "It follows a family that loses its fortune over one long summer",
    "It shows a crowded market at dawn through the eyes of a night watchman",
    "Its central theme is the distance between memory and record",
    "It was praised for its restraint and its unusual structure",
    "It tells the story of a ferry crossing that never ends",
    "It portrays two sisters who run a failing observatory",
    "It was largely ignored at first and rediscovered decades later",
    "Critics still argue about the meaning of its final scene",
    "A restored edition appeared after a long dispute over the rights",
    "Its quiet opening gives way to a long and stormy middle section",
]
_PERSON_TAIL = [
    "rarely gave interviews and kept detailed notebooks of every project",
    "was known for long walks before dawn and for answering every letter by hand",
    "served for some years on the board of a regional arts foundation",
    "received a modest national prize late in life and gave the money away",
    "spoke three languages and translated several technical manuals",
]
_ORG_TAIL = [
    "Its archive of programmes and letters is open to researchers",
    "It nearly closed during a long financial crisis but was rescued by its members",
    "It publishes a short yearly report on its activities",
    "Its emblem was designed by a local engraver",
]
_GEO = ["coastal", "mountainous", "landlocked", "lowland", "island"]
_ECONOMY = ["fishing", "timber", "textiles", "shipping", "mining", "farming", "tourism", "printing"]
_FIELDS = ["mathematics", "music", "medicine", "law", "chemistry", "history", "architecture", "painting"]


@dataclass
class _Entity:
    name: str
    kind: str  # country, city, university, person, org, work
    facts: dict = field(default_factory=dict)
    passage: str = ""


class _World:
    """Every entity of the invented world, built from one seeded random generator."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used_names: set[str] = set()
        self.entities: list[_Entity] = []
        self.countries = [self._country() for _ in range(10)]
        self.cities = [self._city(self.countries[i % len(self.countries)]) for i in range(150)]
        for country in self.countries:
            country.facts["capital"] = rng.choice([c for c in self.cities if c.facts["country"] is country])
        self.universities = [self._university() for _ in range(40)]
        surnames = self._unique(lambda: self._word(2).capitalize(), 90, register=False, max_len=8)
        self.people = [self._person(surnames) for _ in range(420)]
        self.orgs = [self._org() for _ in range(230)]
        self.works = [self._work() for _ in range(260)]
        self._link_back()
        for entity in self.entities:
            entity.passage = _PASSAGES[entity.kind](entity, rng)

    def _link_back(self) -> None:
        """Record on every entity what points to it, so that its passage can say so.

        Why: a multi-hop question names only its anchor. When the bridge passage names the anchor
        too ("Corosk Kromos is the founder of the Juniper Arrow Trading Company"), the question
        itself retrieves it, typically just below the anchor's own passage: reading more
        documents (k) then reaches the second hop. Uses no randomness, so the generator's stream,
        the passages' ids and every question stay as they were.
        """
        for person in self.people:
            person.facts.update(founded_orgs=[], made=[])
        for org in self.orgs:
            org.facts["founder"].facts["founded_orgs"].append(org)
        for work in self.works:
            work.facts["creator"].facts["made"].append(work)

    # --- names -------------------------------------------------------------------------
    def _word(self, syllables: int) -> str:
        rng = self.rng
        return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)

    def _unique(self, make: Callable[[], str], count: int = 1, register: bool = True, max_len: int = 40) -> list[str]:
        # Short names keep prompts short and are easy for a small model to copy exactly.
        names: list[str] = []
        while len(names) < count:
            name = make()
            if name not in self.used_names and name not in names and 3 <= len(name) <= max_len:
                names.append(name)
        if register:
            self.used_names.update(names)
        return names

    def _add(self, name: str, kind: str, **facts) -> _Entity:
        entity = _Entity(name, kind, facts)
        self.entities.append(entity)
        return entity

    # --- entities ----------------------------------------------------------------------
    def _country(self) -> _Entity:
        rng = self.rng
        name = self._unique(lambda: (self._word(1) + rng.choice(_COUNTRY_ENDINGS)).capitalize())[0]
        rivers = self._unique(lambda: f"{self._word(1).capitalize()}{rng.choice(['', 'a', 'en', 'in'])} River", 4)
        return self._add(name, "country", rivers=rivers, language=rng.choice(_LANGUAGES),
                         geo=rng.choice(_GEO), economy=rng.sample(_ECONOMY, 2), millions=rng.randint(2, 40),
                         provinces=rng.randint(5, 19))

    def _city(self, country: _Entity) -> _Entity:
        rng = self.rng
        name = self._unique(lambda: (self._word(1) + rng.choice(_PLACE_ENDINGS)).capitalize())[0]
        return self._add(name, "city", country=country, river=rng.choice(country.facts["rivers"]),
                         product=rng.choice(_PRODUCTS), festival=rng.choice(_FESTIVALS),
                         season=rng.choice(_SEASONS), founded=rng.randint(900, 1700),
                         population=rng.choice(range(12_000, 900_000, 1_000)))

    def _university(self) -> _Entity:
        rng = self.rng
        name = self._unique(lambda: f"{self._word(2).capitalize()} {rng.choice(_UNI_KINDS)}")[0]
        return self._add(name, "university", city=rng.choice(self.cities), founded=rng.randint(1400, 1950),
                         fields=rng.sample(_FIELDS, 2), students=rng.choice(range(800, 30_000, 100)))

    def _person(self, surnames: list[str]) -> _Entity:
        rng = self.rng
        name = self._unique(lambda: f"{self._word(rng.choice([1, 2])).capitalize()} {rng.choice(surnames)}", max_len=15)[0]
        born, settled = rng.sample(self.cities, 2)
        return self._add(name, "person", born_city=born, settled_city=settled, school=rng.choice(self.universities),
                         birth_year=rng.randint(1850, 1990), profession=rng.choice(_PROFESSIONS),
                         career=rng.choice(_CAREER), tail=rng.choice(_PERSON_TAIL), traits=rng.sample(_TRAITS, 2), years_abroad=rng.randint(2, 12))

    def _org(self) -> _Entity:
        rng = self.rng
        kind = rng.choice(list(_ORG_KINDS))
        name = self._unique(lambda: f"{rng.choice(_ORG_ADJ)} {rng.choice(_ORG_NOUN)} {kind}")[0]
        founder = rng.choice(self.people)
        return self._add(name, "org", org_kind=kind, founder=founder, city=rng.choice(self.cities),
                         founded=min(2024, founder.facts["birth_year"] + rng.randint(22, 60)), members=rng.randint(6, 400),
                         tail=rng.choice(_ORG_TAIL))

    def _work(self) -> _Entity:
        rng = self.rng
        kind = rng.choice(list(_WORK_KINDS))
        makers = [p for p in self.people if p.facts["profession"] == _WORK_KINDS[kind][0]]
        name = self._unique(lambda: rng.choice(["The ", ""]) + f"{rng.choice(_WORK_ADJ)} {rng.choice(_WORK_NOUN)}")[0]
        creator = rng.choice(makers)
        return self._add(name, "work", work_kind=kind, creator=creator,
                         year=min(2024, creator.facts["birth_year"] + rng.randint(20, 70)), filler=rng.sample(_WORK_FILLER, 3))


def _the(name: str) -> str:
    """Organisation names read with an article: 'the Amber Loom Ensemble'."""
    return f"the {name}"


def _listing(names: list[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _country_passage(e: _Entity, rng: random.Random) -> str:
    f = e.facts
    return (f"{e.name} is a {f['geo']} country with about {f['millions']} million inhabitants. "
            f"Its capital is {f['capital'].name}. The official language of {e.name} is {f['language']}, "
            f"and its economy rests on {f['economy'][0]} and {f['economy'][1]}. {e.name} is divided into "
            f"{f['provinces']} provinces, each with its own elected council.")


def _city_passage(e: _Entity, rng: random.Random) -> str:
    f = e.facts
    return (f"{e.name} is a city in {f['country'].name}. The {f['river']} flows through {e.name}, which is known "
            f"for its {f['product']}. The city was founded around the year {f['founded']} and today has about "
            f"{f['population']:,} residents. Every {f['season']} {e.name} hosts a {f['festival']} that draws "
            f"visitors from across the region.")


def _university_passage(e: _Entity, rng: random.Random) -> str:
    f = e.facts
    return (f"{e.name} is a school of higher education in the city of {f['city'].name}, founded in {f['founded']}. "
            f"It is known for its programmes in {f['fields'][0]} and {f['fields'][1]}, and about "
            f"{f['students']:,} students are enrolled there. Its library holds a large collection of old maps "
            f"and letters.")


def _person_passage(e: _Entity, rng: random.Random) -> str:
    f = e.facts
    surname = e.name.split()[-1]
    article = "an" if f["profession"][0] in "aeiou" else "a"
    roles = ([f"the founder of {_the(o.name)}" for o in f["founded_orgs"]]
             + [f"the {_role(w)} of {w.name}" for w in f["made"]])
    known_as = f", {_listing(roles)}," if roles else ""
    return (f"{e.name}{known_as} is {article} {f['profession']} who was born in {f['born_city'].name} in "
            f"{f['birth_year']}. {surname} studied at {f['school'].name}. After {f['years_abroad']} years abroad, {e.name} settled "
            f"in {f['settled_city'].name} and {f['career']}. Colleagues describe {surname} as {f['traits'][0]} "
            f"and {f['traits'][1]}. {e.name} {f['tail']}.")


def _org_passage(e: _Entity, rng: random.Random) -> str:
    f = e.facts
    desc, activity = _ORG_KINDS[f["org_kind"]]
    return (f"The {e.name} is a {desc} founded in {f['founded']} by {f['founder'].name}. It is based in "
            f"{f['city'].name}, where it {activity}. Today {_the(e.name)} has about {f['members']} members "
            f"and is run by an elected board. {f['tail']}.")


def _work_passage(e: _Entity, rng: random.Random) -> str:
    f = e.facts
    participle = _WORK_KINDS[f["work_kind"]][3]
    article = "an" if f["work_kind"][0] in "aeiou" else "a"
    return (f"{e.name} is {article} {f['work_kind']} by {f['creator'].name}, {participle} in {f['year']}. "
            f"{f['filler'][0]}. {f['filler'][1]}. {f['filler'][2]}.")


_PASSAGES = {"country": _country_passage, "city": _city_passage, "university": _university_passage,
             "person": _person_passage, "org": _org_passage, "work": _work_passage}


# --- relations and question chains -------------------------------------------------------
# A relation maps an entity to an entity (a bridge) or to a final value, states the fact in its
# source's passage, and has a one-hop question that IterDRAG's decomposition uses.
@dataclass(frozen=True)
class _Relation:
    follow: Callable[[_Entity], "_Entity | str"]
    ask: Callable[[_Entity], str]


def _role(work: _Entity) -> str:
    return _WORK_KINDS[work.facts["work_kind"]][2]


_RELATIONS: dict[str, _Relation] = {
    "founder": _Relation(lambda e: e.facts["founder"], lambda e: f"Who founded {_the(e.name)}?"),
    "creator": _Relation(lambda e: e.facts["creator"],
                         lambda e: f"Who {_WORK_KINDS[e.facts['work_kind']][1]} {e.name}?"),
    "born_city": _Relation(lambda e: e.facts["born_city"], lambda e: f"In which city was {e.name} born?"),
    "school": _Relation(lambda e: e.facts["school"], lambda e: f"Where did {e.name} study?"),
    "birth_year": _Relation(lambda e: str(e.facts["birth_year"]), lambda e: f"In which year was {e.name} born?"),
    "profession": _Relation(lambda e: e.facts["profession"], lambda e: f"What is the profession of {e.name}?"),
    "org_city": _Relation(lambda e: e.facts["city"], lambda e: f"In which city is {_the(e.name)} based?"),
    "org_year": _Relation(lambda e: str(e.facts["founded"]), lambda e: f"In which year was {_the(e.name)} founded?"),
    "work_year": _Relation(lambda e: str(e.facts["year"]),
                           lambda e: f"In which year was {e.name} {_WORK_KINDS[e.facts['work_kind']][3]}?"),
    "country": _Relation(lambda e: e.facts["country"], lambda e: f"In which country is {e.name}?"),
    "river": _Relation(lambda e: e.facts["river"], lambda e: f"Which river flows through {e.name}?"),
    "capital": _Relation(lambda e: e.facts["capital"], lambda e: f"What is the capital of {e.name}?"),
    "uni_city": _Relation(lambda e: e.facts["city"], lambda e: f"In which city is {e.name}?"),
}

# (anchor kind, relation chain, how the whole question reads; {x} is the anchor, {role} its maker)
_CHAINS: dict[int, list[tuple[str, tuple[str, ...], str | None]]] = {
    1: [
        ("person", ("born_city",), None), ("person", ("profession",), None), ("person", ("birth_year",), None),
        ("person", ("school",), None), ("work", ("creator",), None), ("work", ("work_year",), None),
        ("org", ("founder",), None), ("org", ("org_year",), None), ("org", ("org_city",), None),
        ("city", ("country",), None), ("city", ("river",), None), ("country", ("capital",), None),
        ("university", ("uni_city",), None),
    ],
    2: [
        ("org", ("founder", "born_city"), "In which city was the founder of {x} born?"),
        ("org", ("founder", "profession"), "What is the profession of the founder of {x}?"),
        ("org", ("founder", "birth_year"), "In which year was the founder of {x} born?"),
        ("work", ("creator", "born_city"), "In which city was the {role} of {x} born?"),
        ("work", ("creator", "birth_year"), "In which year was the {role} of {x} born?"),
        ("work", ("creator", "school"), "Where did the {role} of {x} study?"),
        ("person", ("born_city", "country"), "In which country was {x} born?"),
        ("person", ("born_city", "river"), "Which river flows through the city where {x} was born?"),
        ("person", ("school", "uni_city"), "In which city is the school where {x} studied?"),
        ("org", ("org_city", "country"), "In which country is {x} based?"),
        ("org", ("org_city", "river"), "Which river flows through the city where {x} is based?"),
        ("city", ("country", "capital"), "What is the capital of the country where {x} lies?"),
    ],
    3: [
        ("org", ("founder", "born_city", "country"), "In which country was the founder of {x} born?"),
        ("org", ("founder", "born_city", "river"), "Which river flows through the birthplace of the founder of {x}?"),
        ("org", ("founder", "school", "uni_city"), "In which city is the school where the founder of {x} studied?"),
        ("work", ("creator", "born_city", "country"), "In which country was the {role} of {x} born?"),
        ("work", ("creator", "born_city", "river"), "Which river flows through the birthplace of the {role} of {x}?"),
        ("work", ("creator", "school", "uni_city"), "In which city is the school where the {role} of {x} studied?"),
        ("person", ("born_city", "country", "capital"), "What is the capital of the country where {x} was born?"),
        ("org", ("org_city", "country", "capital"), "What is the capital of the country where {x} is based?"),
    ],
}


def _aliases(value: "_Entity | str") -> list[str]:
    name = value.name if isinstance(value, _Entity) else value
    if name.endswith(" River"):
        return [name, name.removesuffix(" River")]
    return [name]


def _make_question(anchor: _Entity, chain: tuple[str, ...], template: str | None, qid: str):
    """Walk the chain from the anchor; returns the question and the facts it relies on."""
    current: _Entity | str = anchor
    decomposition, titles, facts = [], [], []
    for relation_name in chain:
        assert isinstance(current, _Entity)
        relation = _RELATIONS[relation_name]
        nxt = relation.follow(current)
        decomposition.append((relation.ask(current), _aliases(nxt)[0]))
        titles.append(current.name)
        facts.append((current.name, relation_name))
        current = nxt
    x = _the(anchor.name) if anchor.kind == "org" else anchor.name
    if template is None:
        text = decomposition[0][0]
    else:
        text = template.format(x=x, role=_role(anchor) if anchor.kind == "work" else "")
        text = text[0].upper() + text[1:]
    question = Question(qid=qid, question=text, answers=_aliases(current), dataset="demo", hops=len(chain),
                        supporting_titles=titles, decomposition=decomposition if len(chain) > 1 else [])
    return question, facts


def _draw_questions(world: _World, rng: random.Random) -> tuple[list[Question], list[Question]]:
    by_kind: dict[str, list[_Entity]] = {}
    for entity in world.entities:
        by_kind.setdefault(entity.kind, []).append(entity)
    test_facts: set[tuple[str, str]] = set()
    texts: set[str] = set()

    def draw(hops: int, count: int, split: str, forbidden: set[tuple[str, str]], record: set | None) -> list[Question]:
        out: list[Question] = []
        chains = list(_CHAINS[hops])
        turn = 0
        while len(out) < count:
            if not chains:
                raise RuntimeError(f"demo generator could not draw {count} {hops}-hop {split} questions")
            kind, chain, template = chains[turn % len(chains)]  # round robin keeps templates balanced
            for _ in range(50):
                anchor = rng.choice(by_kind[kind])
                question, facts = _make_question(anchor, chain, template, f"demo-{split}-{hops}hop-{len(out):03d}")
                # e.g. "the capital of the country where X lies" when X is that capital: skip it
                gives_away = any(name in question.question for _, name in question.decomposition)
                if question.question not in texts and not gives_away and not any(f in forbidden for f in facts):
                    break
            else:  # every fact this template could use is taken by the test set: drop the template
                chains.remove((kind, chain, template))
                continue
            turn += 1
            texts.add(question.question)
            if record is not None:
                record.update(facts)
            out.append(question)
        return out

    test = [draw(hops, TEST_PER_HOP, "test", set(), test_facts) for hops in (1, 2, 3)]
    pool = [draw(hops, POOL_PER_HOP, "pool", test_facts, None) for hops in (1, 2, 3)]
    # Interleave 1-, 2- and 3-hop questions so that any prefix (a sweep's --limit) mixes all three.
    return [q for group in zip(*test) for q in group], [q for group in zip(*pool) for q in group]


@lru_cache(maxsize=4)
def _build(seed: int) -> tuple[tuple[Question, ...], tuple[Question, ...], tuple[Document, ...]]:
    rng = random.Random(seed)
    world = _World(rng)
    # Shuffle before numbering so that ids and order say nothing about an entity's kind.
    entities = list(world.entities)
    rng.shuffle(entities)
    corpus = [Document(doc_id=f"demo-{i:04d}", title=e.name, text=e.passage) for i, e in enumerate(entities)]
    test, pool = _draw_questions(world, rng)
    return tuple(test), tuple(pool), tuple(corpus)


def demo_dataset(seed: int = 0) -> Dataset:
    """The generated demo dataset: 240 test questions (1-3 hops), 300 pool questions, 1,110 passages."""
    test, pool, corpus = _build(seed)

    def copy(q: Question) -> Question:  # callers may edit their copy; the cached build stays intact
        return replace(q, answers=list(q.answers), supporting_titles=list(q.supporting_titles),
                       decomposition=list(q.decomposition))

    return Dataset(name="demo" if seed == 0 else f"demo-seed{seed}", questions=[copy(q) for q in test],
                   corpus=list(corpus), source="demo", pool=[copy(q) for q in pool])
