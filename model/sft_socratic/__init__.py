"""Socratic, the user simulator: trained on the human turns, with the Socratic system prompt."""
from core.conversation import HUMAN
from model.dyadic import SYSTEM_PROMPTS

TRAIN_ROLE = HUMAN
SYSTEM_PROMPT = SYSTEM_PROMPTS[TRAIN_ROLE]
