"""Words of one-line messages that depend on what is filled in at run time.

"'c.pt' is a {kind} checkpoint" printed "a endpoint": the article has to follow the word
actually printed (a kind, a class name, a type), so it is chosen here, from how the word
sounds, not written into the message.
"""

from __future__ import annotations

import re

# Letters whose names start with a vowel sound: "an F", "an MLP", "an SVCCA".
_VOWEL_NAMED_LETTERS = frozenset("aefhilmnorsx")
# Lower-case words of this code base that are read letter by letter.
_INITIALISMS = frozenset(
    {"bn", "cka", "fge", "hvp", "mlp", "mse", "nll", "pca", "pwcca", "qr", "sgd", "svcca", "zca"}
)
# Vowel-letter beginnings read with a consonant sound: "a unit", "a user", "a one", "a euclid".
_CONSONANT_SOUNDS = ("uni", "use", "usu", "uti", "ura", "ure", "uri", "uro", "eu", "one", "once")


def article(word: str) -> str:
    """'an' or 'a', whichever goes before `word` as it is read aloud: 'an endpoint', 'a curve',
    'an fge', 'an EnsembleResult', 'an int', 'a unit', 'an 8x8', 'an 11', 'a 2018 file'."""
    text = str(word).lstrip(" '\"`(")
    if not text:
        return "a"
    digits = re.match(r"\d+", text)
    if digits:  # eight, eleven, eighteen (and their thousands) start with a vowel sound
        number = digits.group()
        vowel = number[0] == "8" or (number[:2] in ("11", "18") and len(number) % 3 == 2)
        return "an" if vowel else "a"
    head = re.match(r"[A-Za-z]+", text)
    letters = head.group() if head else text
    spelled = (
        len(letters) == 1
        or letters.lower() in _INITIALISMS
        or (len(letters) > 1 and letters[:2].isupper())  # FGEResult, MLP, SVCCA
    )
    if spelled:
        return "an" if letters[0].lower() in _VOWEL_NAMED_LETTERS else "a"
    lower = letters.lower()
    if lower.startswith(_CONSONANT_SOUNDS):
        return "a"
    return "an" if lower[0] in "aeiou" else "a"


def a_or_an(word: str) -> str:
    """`word` after its indefinite article: a_or_an('endpoint') == 'an endpoint'."""
    return f"{article(word)} {word}"
