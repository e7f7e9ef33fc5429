"""English text -> phonemes for Kokoro, with misaki (what Kokoro was trained with).

misaki's G2P wants spaCy's ``en_core_web_sm`` and downloads it at run time when it is not
installed. We never let that happen: the spaCy pipeline is loaded from a directory under
``models/`` (the ``gpu`` and ``cpu`` profiles fetch it), and without one (the ``test`` profile) a
blank spaCy tokenizer plus a small punctuation tagger stands in. Either way misaki's own lexicon
does the work, and espeak-ng (bundled by the ``espeakng-loader`` wheel, no system package)
spells out-of-vocabulary words.
"""

from __future__ import annotations

from pathlib import Path

from ..lipsync import PUNCTUATION, WordPhonemes

# Punctuation Kokoro reads (it shapes prosody and pauses); spaCy's tags for them, which misaki
# needs to treat them as punctuation rather than glue them onto the neighbouring word.
_PUNCT_TAG = {".": ".", "!": ".", "?": ".", "…": ":", ",": ",", ";": ":", ":": ":",
              "—": ":", "–": ":", "-": ":", "(": "-LRB-", ")": "-RRB-", '"': "''", "“": "``",
              "”": "''", "$": "$", "#": "#"}


def _blank_nlp():
    import spacy
    from spacy.language import Language

    if "avatar_punct_tagger" not in Language.factories:
        @Language.component("avatar_punct_tagger")
        def punct_tagger(doc):
            for tok in doc:
                if tok.text in _PUNCT_TAG:
                    tok.tag_ = _PUNCT_TAG[tok.text]
            return doc

    nlp = spacy.blank("en")
    nlp.add_pipe("avatar_punct_tagger")
    return nlp


class G2P:
    """``G2P()(text)`` -> the words of ``text`` with their Kokoro phonemes."""

    def __init__(self, spacy_model: Path | None = None, british: bool = False):
        import spacy
        from misaki import en
        from misaki.espeak import EspeakFallback

        if spacy_model is not None:
            if not Path(spacy_model).is_dir():
                raise FileNotFoundError(f"spaCy model {spacy_model} is missing; fetch it with "
                                        "python scripts/download_models.py")
            nlp = spacy.load(spacy_model, enable=["tok2vec", "tagger"])
        else:
            nlp = _blank_nlp()
        # misaki's G2P.__init__ would download en_core_web_sm; set its fields ourselves instead.
        g2p = en.G2P.__new__(en.G2P)
        g2p.version, g2p.british, g2p.unk = None, british, ""
        g2p.nlp = nlp
        g2p.lexicon = en.Lexicon(british)
        g2p.fallback = EspeakFallback(british)
        self._g2p = g2p

    def __call__(self, text: str) -> list[WordPhonemes]:
        _, tokens = self._g2p(text)
        out = []
        for tk in tokens:
            ps = tk.phonemes or ""
            if not ps and not tk.text.strip():
                continue
            is_word = any(c not in PUNCTUATION for c in ps)
            out.append(WordPhonemes(tk.text, ps, bool(tk.whitespace), is_word))
        return out
