"""PlatoLM, the assistant: trained on the assistant turns, with the PlatoLM system prompt."""
from core.conversation import GPT
from model.dyadic import SYSTEM_PROMPTS

TRAIN_ROLE = GPT
SYSTEM_PROMPT = SYSTEM_PROMPTS[TRAIN_ROLE]
