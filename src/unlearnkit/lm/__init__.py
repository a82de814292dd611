"""Language-model pieces: the fictitious-profile generator and the text codec / tokenised data."""

from .profiles import GENERATOR_VERSION, IDK_ANSWERS, Profile, QAItem, generate_profiles, neighbour_items
from .text import IGNORE, TextCodec, TokenData, word_tokenizer

__all__ = ["GENERATOR_VERSION", "IDK_ANSWERS", "IGNORE", "Profile", "QAItem", "TextCodec", "TokenData", "generate_profiles",
           "neighbour_items", "word_tokenizer"]
