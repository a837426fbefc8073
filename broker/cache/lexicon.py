"""The word lists of the semantic tier's verifier (:mod:`broker.cache.verify`).

Hand-written, small and closed: what a word is reduced to (irregular forms, spellings,
abbreviations), which words never change an answer (the *free* words: articles, pronouns,
auxiliaries, the framing of a request and pleasantries), and which pairs of different words
mean the same (:data:`SYNONYMS`). Every other word is *content*: a content word in one
wording and not in the other blocks a hit. So a list errs towards a miss: a word left out of
:data:`FREE` or :data:`SYNONYMS` costs recall, never a wrong answer. Words that look like
framing but steer the answer (``just``, ``only``, ``brief``, ``all``, ``some``, ``more``,
``first``, ``from``, ``without`` ...) are deliberately content.
"""

from __future__ import annotations

__all__ = [
    "ABBREVIATIONS",
    "FREE",
    "IRREGULAR",
    "NEGATIONS",
    "NUMBER_WORDS",
    "OPEN",
    "PLEASANTRIES",
    "SETUP",
    "SYNONYMS",
]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Words that never change what is asked (after :data:`IRREGULAR` and stemming).
FREE = _words("""
a an the this that these those there here it its it's itself
i my myself you your yourself we us our ourselves
be do have can could would will shall should may might must
please pls kindly
tell give show let help want need like know wonder
what which how
explain describe define state walk through list name calculate compute find determine
provide produce
of in on at by for with as about to
and or so but then also just_a
hi hello hey greetings thanks thank cheers advance appreciate appreciated
hope
ok okay
kind able possible grateful guidance explanation curious wondering ask asking dear
demonstrate illustrate
actually really basically anyway anyways
lol haha ugh btw yo dude um uh
using via between
""")

#: Words of a clause that is only a pleasantry ("Hi there!", "Hope you're well.", "Thanks a
#: lot!"): such a clause is dropped whole. Stems (see :func:`broker.cache.verify.stem`).
PLEASANTRIES = _words("""
hi hello hey greeting good morning afternoon evening great day week well hop hope going
thank thanks cheer cheers ton lot much advance appreciat sorry bother again there all everyon
nic wonderful lovely
""")

#: Words that make a sentence about the asker a constraint rather than an aside
#: (:mod:`broker.cache.filler`): their set-up, diet, budget, level or age. As written,
#: lowercased.
SETUP = _words("""
use uses using used run runs running own owns have has had version os device budget
vegetarian vegan allergic allergy intolerant diet diabetic pregnant kosher halal
beginner novice expert advanced intermediate kid kids child children son daughter baby
old age aged years only just without must can't cannot prefer rather instead
""")

#: Stems of a request whose answer depends on who asks (a suggestion, a plan, a piece of
#: writing): an aside beside one is kept as a constraint (:mod:`broker.cache.filler`).
OPEN = _words("""
suggest recommend advis advic plan propos should best better good ideal idea tip writ
draft compos creat generat design choos pick
""")

#: Negations: a different count of them in two wordings blocks a hit.
NEGATIONS = _words("not no never none nor nothing neither cannot nobody nowhere")

#: Word forms the light stemmer does not reach, to their base.
IRREGULAR = {
    "is": "be", "are": "be", "was": "be", "were": "be", "been": "be", "being": "be", "am": "be",
    "'s": "be", "'re": "be", "'m": "be",
    "does": "do", "did": "do", "done": "do", "doing": "do",
    "has": "have", "had": "have", "having": "have", "'ve": "have",
    "'ll": "will", "'d": "would",
    "gave": "give", "given": "give", "took": "take", "taken": "take", "wrote": "write",
    "written": "write", "ran": "run", "made": "make", "found": "find", "built": "build",
    "sent": "send", "bought": "buy", "sold": "sell", "got": "get", "gotten": "get",
    "went": "go", "gone": "go", "came": "come", "saw": "see", "seen": "see", "knew": "know",
    "known": "know", "thought": "think", "told": "tell", "said": "say", "paid": "pay",
    "kept": "keep", "left": "leave", "meant": "mean", "began": "begin", "begun": "begin",
    "chose": "choose", "chosen": "choose", "drew": "draw", "drawn": "draw", "spent": "spend",
    "led": "lead", "held": "hold", "brought": "bring", "caught": "catch", "taught": "teach",
    "shown": "show", "grown": "grow", "thrown": "throw", "driven": "drive", "eaten": "eat",
    "broken": "break", "spoken": "speak", "stolen": "steal", "frozen": "freeze",
    "hidden": "hide", "rewritten": "rewrite", "forgotten": "forget",
    "children": "child", "people": "person", "men": "man", "women": "woman", "mice": "mouse",
    "feet": "foot", "teeth": "tooth", "data": "data", "indices": "index", "indexes": "index",
    "criteria": "criterion", "analyses": "analysis",
}  # fmt: skip

#: Spellings and abbreviations to the word they stand for.
ABBREVIATIONS = {
    "pls": "please", "plz": "please", "thx": "thanks", "ty": "thanks", "u": "you", "ur": "your",
    "w/": "with", "w/o": "without", "b/c": "because", "bc": "because", "cuz": "because",
    "whats": "what", "hows": "how", "im": "i", "dont": "do not", "doesnt": "does not",
    "cant": "cannot", "wont": "will not", "isnt": "is not", "didnt": "did not",
    "js": "javascript", "ts": "typescript", "py": "python", "postgres": "postgresql",
    "db": "database", "dbs": "databases", "func": "function", "fn": "function",
    "diff": "difference", "num": "number", "txt": "text", "msg": "message", "info": "information",
    "yrs": "years", "yr": "year", "hrs": "hours", "hr": "hour", "mins": "minutes",
    "secs": "seconds", "sec": "second", "approx": "approximately", "pic": "picture",
    "colour": "color", "favourite": "favorite", "organise": "organize", "summarise": "summarize",
    "optimise": "optimize", "analyse": "analyze", "behaviour": "behavior", "centre": "center",
    "metre": "meter", "litre": "liter", "kilometre": "km", "kilometres": "km", "realise": "realize",
    "initialise": "initialize", "serialise": "serialize", "normalise": "normalize",
    "into": "to", "onto": "to", "whether": "if", "y": "why", "wht": "what", "n": "and",
    "calc": "calculate", "vals": "values",
    "col": "column", "cols": "columns", "acct": "account", "chem": "chemical",
    "eng": "english", "lang": "language", "cals": "calories", "mould": "mold",
    "thru": "through", "tho": "though", "shud": "should", "cud": "could", "wud": "would",
    "wat": "what", "hav": "have", "abt": "about", "ppl": "people", "rly": "really",
    "amt": "amount", "qty": "quantity", "gimme": "give me", "lemme": "let me",
    "wanna": "want to", "gotta": "have to", "whom": "who", "vs": "and", "versus": "and",
    "dict": "dictionary", "repo": "repository", "config": "configuration", "dir": "directory",
    "env": "environment", "var": "variable", "arg": "argument", "param": "parameter",
    "int": "integer", "avg": "average", "doc": "document", "docs": "documents",
    "tv": "television", "e-mail": "email", "mom": "mother", "mum": "mother", "dad": "father",
    "kilometers": "km", "kilometer": "km", "kilograms": "kg", "kilogram": "kg",
    "centimeters": "cm", "centimeter": "cm", "millimeters": "mm", "millimeter": "mm",
}  # fmt: skip

_COUNTING = """
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen twenty
"""
#: Number words to digits.
NUMBER_WORDS = {w: str(i) for i, w in enumerate(_COUNTING.split())}
NUMBER_WORDS |= {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70"}
NUMBER_WORDS |= {"eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000"}
NUMBER_WORDS |= {"million": "1000000", "billion": "1000000000", "twice": "2", "dozen": "12"}

#: Groups of words that ask the same thing in a question, whichever is used: everyday
#: synonyms only, never two ends of a scale, two members of a kind or two directions.
SYNONYM_GROUPS = (
    "remove delete erase",
    "create make generate",
    "begin start",
    "finish end",
    "merge combine",
    "repair fix",
    "big large",
    "little small",
    "buy purchase",
    "get obtain retrieve fetch",
    "locate find",
    "use utilize employ",
    "assist help",
    "need require",
    "display show",
    "change modify alter",
    "choose select pick",
    "incorrect wrong",
    "error mistake",
    "easy simple",
    "difficult hard",
    "way method approach",
    "usual typical normal",
    "price cost",
    "cheap inexpensive",
    "answer reply respond response",
    "meaning mean definition",
    "holiday vacation",
    "shop store",
    "kid child",
    "phone telephone",
    "picture image photo",
    "car automobile",
    "unique distinct",
    "also too",
    "often frequently",
    "maybe perhaps",
    "enough sufficient",
    "main primary principal",
    "quick fast",
    "quickly fast",
    "invert reverse",
    "verify check",
    "receive get",
    "go travel",
    "job work",
    "shut close",
    "average mean",
    "recommend suggest advise",
    "write compose draft",
    "rewrite rephrase reword paraphrase",
    "probability chance likelihood",
    "flip toss",
    "way method approach technique",
    "fridge refrigerator",
    "folder directory",
    "lawyer attorney",
    "medication medicine",
    "film movie",
    "sofa couch",
    "trash garbage rubbish",
    "issue problem",
    "bug defect",
    "edit modify change",
    "examine inspect",
    "each every",
    "every all",
    "biggest largest",
    "nearest closest",
    "acquire obtain get",
    "decrease reduce",
    "omit exclude",
)

#: Each word to the groups it is in: two words are synonyms when they share one (so "mean"
#: is "average" and "meaning", and "average" is not "meaning").
SYNONYMS: dict[str, frozenset[int]] = {}
for _number, _group in enumerate(SYNONYM_GROUPS):
    for _word in _group.split():
        SYNONYMS[_word] = SYNONYMS.get(_word, frozenset()) | {_number}
