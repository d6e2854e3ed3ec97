"""Next-turn generation for either role, shared by the chat CLIs, the server and the data tools.

A :class:`Generator` loads a causal LM once and writes the next turn of ``human`` (the Socratic
simulator asking) or ``gpt`` (the PlatoLM assistant answering). The prompt is built by the same
``model.dyadic.Template`` used in training, so inference sees exactly the training format.

* ``generate`` runs ONE batched Hugging Face ``generate`` call (left padding) for many
  conversations, each with its own token budget, and returns :class:`Completion` objects.
* ``stream`` yields the text of one turn as it is produced, through a transformers streamer whose
  cost per token is constant (``TextStreamer`` re-decodes everything since the last newline).

A checkpoint's template, role and system prompt come from its record (model.checkpoint) unless given. At
scale on a GPU, serve the checkpoint with vLLM instead (``model.serve --engine vllm`` starts ``vllm serve``,
which renders the chat template the trainer saved with the checkpoint).

Usage (a library; the commands built on it are ``model.sft_platolm.cli``, ``model.sft_socratic.cli``
and ``model.serve``)::

    gen = Generator("smollm2")
    [reply] = gen.generate([[Turn("human", "What is the capital of France?")]], "gpt", max_new_tokens=64)
"""
from __future__ import annotations

import functools
import queue
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

from core.conversation import GPT, HUMAN, Turn
from model.checkpoint import read_checkpoint
from model.dyadic import Template

SANE_MAX_LENGTH = 1_000_000  # tokenizers without a limit report ~1e30 as model_max_length


class ContextOverflow(ValueError):
    """The prompt leaves no room for a single new token within the model's context."""

    def __init__(self, prompt_tokens: int, limit: int):
        self.prompt_tokens, self.limit = prompt_tokens, limit
        super().__init__(f"the conversation is {prompt_tokens} tokens long, which leaves no room "
                         f"to generate within the context of {limit} tokens")


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string) | "length" (token budget or context)
    prompt_tokens: int
    completion_tokens: int  # tokens generated, not counting the end-of-turn token


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available (use --device cpu)")
    return device


def pick_dtype(dtype, device: str):
    """None/"auto": bfloat16 on a GPU that supports it, else float32; or a torch dtype / its name."""
    import torch

    if dtype is None or dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might begin a stop string (so must not be shown yet)."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if s.startswith(text[-k:]):
                longest = k
                break
    return longest


class _IncrementalText:
    """Token ids -> new text, in constant time per token (the vLLM/TGI prefix/read-offset method).

    Decoding a token alone can lose its leading space or split a multi-byte character, so each new
    piece is the difference between decoding a short window with and without the newest tokens.
    """

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.prefix, self.read = tokenizer, [], 0, 0

    def add(self, ids: Sequence[int]) -> str:
        self.ids.extend(ids)
        dec = lambda a, b: self.tokenizer.decode(self.ids[a:b], skip_special_tokens=True)
        before = dec(self.prefix, self.read)
        after = dec(self.prefix, len(self.ids))
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""


class _QueueStreamer:
    """A transformers streamer (``put``/``end``) that hands token ids to the consuming thread."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)


class TextStream:
    """Iterator over the text pieces of one generated turn; ``.completion`` is set once it ends."""

    def __init__(self, pieces: Iterator[str]):
        self._pieces = pieces
        self.completion: Completion | None = None
        self.cancel = threading.Event()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop generating (e.g. the client went away); the model is freed within one step."""
        self.cancel.set()
        self._pieces.close()


@functools.cache
def _criteria():
    """Stopping criteria built on transformers' base class (imported lazily: torch is slow to load)."""
    import torch
    from transformers import StoppingCriteria

    class RowBudget(StoppingCriteria):
        """Each row stops after its own number of new tokens (one batch, many token budgets)."""

        def __init__(self, prompt_len: int, budgets: list[int], device):
            self.prompt_len = prompt_len
            self.budgets = torch.tensor(budgets, device=device)

        def __call__(self, input_ids, scores, **kwargs):
            return (input_ids.shape[1] - self.prompt_len) >= self.budgets

    class Cancelled(StoppingCriteria):
        def __init__(self, event: threading.Event):
            self.event = event

        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    return RowBudget, Cancelled


class Generator:
    """One loaded model that writes the next turn of either role, batched or streamed."""

    def __init__(self, model_path: str, template: str | None = None, device: str = "auto", dtype=None,
                 max_context: int | None = None):
        """``template`` None: the one the checkpoint records (model.checkpoint), else dyadic."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from core.assets import resolve

        path = resolve(model_path)
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.checkpoint = read_checkpoint(path)
        self.template = Template(self.tokenizer, self.checkpoint.template_for(template))
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, self.device))
        self.model.to(self.device).eval()
        self.model_name, self.path = str(model_path), path
        self.max_context = max_context or default_max_context(self.model.config, self.tokenizer)
        self.stop_ids, self.stop_texts = end_of_turn(self.tokenizer, self.template)
        if self.tokenizer.pad_token is None:  # left padding for batches needs one; never attended
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = self.tokenizer.pad_token_id
        self._lock = threading.Lock()  # one generate() on the model at a time
        self._torch = torch

    # -- prompts ---------------------------------------------------------------------------------
    def prompt_text(self, turns: Sequence[Turn], role: str, system: str | None = None) -> str:
        if role not in (HUMAN, GPT):
            raise ValueError(f"role must be {HUMAN!r} or {GPT!r}, not {role!r}")
        return self.template.prompt_for(turns, role, self.system_for(role) if system is None else system)

    def system_for(self, role: str) -> str:
        """The default system prompt for ``role`` turns: the checkpoint's trained one for its role, else the paper's."""
        return self.checkpoint.system_for(role)

    def prompt_ids(self, turns: Sequence[Turn], role: str, system: str | None = None,
                   keep_last: int | None = None) -> list[int]:
        """Token ids of the prompt for the next ``role`` turn, only the latest ``keep_last`` of them if given
        (vLLM's ``truncate_prompt_tokens``); ContextOverflow if nothing fits after it."""
        ids = self.tokenizer(self.prompt_text(turns, role, system),
                             add_special_tokens=self.template.add_special_tokens)["input_ids"]
        return self._fit(ids, keep_last)

    def chat_template_ids(self, messages: list[dict], keep_last: int | None = None) -> list[int]:
        """The prompt a chat-template server (vLLM) builds: the checkpoint's own chat template with its
        generation prompt, tokenised without adding special tokens; ``keep_last`` as in :meth:`prompt_ids`."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self._fit(self.tokenizer(text, add_special_tokens=False)["input_ids"], keep_last)

    def _fit(self, ids: list[int], keep_last: int | None) -> list[int]:
        if keep_last:
            ids = ids[-keep_last:]
        if len(ids) >= self.max_context:
            raise ContextOverflow(len(ids), self.max_context)
        return ids

    # -- generation ------------------------------------------------------------------------------
    def _config(self, temperature: float, top_p: float, max_new_tokens: int, min_new_tokens: int,
                stop: Sequence[str]):
        from transformers import GenerationConfig

        # plain temperature/top-p sampling as in the OpenAI API: no top-k, no repetition penalty,
        # whatever the checkpoint's generation_config.json says; temperature 0 means greedy
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 \
            else dict(do_sample=False)
        return GenerationConfig(
            **sampling, repetition_penalty=1.0, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
            eos_token_id=self.stop_ids, pad_token_id=self.pad_id, stop_strings=list(stop) or None)

    def _budgets(self, prompt_lens: Sequence[int], max_new_tokens: int | Sequence[int]) -> list[int]:
        wanted = ([max_new_tokens] * len(prompt_lens) if isinstance(max_new_tokens, int)
                  else list(max_new_tokens))
        if len(wanted) != len(prompt_lens) or min(wanted, default=1) < 1:
            raise ValueError("max_new_tokens must be >= 1, one value or one per conversation")
        return [min(w, self.max_context - n) for w, n in zip(wanted, prompt_lens)]

    def generate(self, conversations: Sequence[Sequence[Turn]], role: str, system: str | None = None, *,
                 temperature: float = 0.7, top_p: float = 1.0, max_new_tokens: int | Sequence[int] = 512,
                 stop: Sequence[str] | None = None, seed: int | None = None,
                 min_new_tokens: int = 0) -> list[Completion]:
        """The next ``role`` turn of every conversation, in one batched generate call.

        ``max_new_tokens`` may be one value per conversation; each is clipped so that prompt plus
        answer fit ``max_context``. Raises ContextOverflow if any prompt leaves no room.
        """
        if not conversations:
            return []
        prompts = [self.prompt_ids(turns, role, system) for turns in conversations]
        return self.generate_ids(prompts, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, stop=stop, seed=seed,
                                 min_new_tokens=min_new_tokens)

    def generate_ids(self, prompts: Sequence[Sequence[int]], *, temperature: float = 0.7,
                     top_p: float = 1.0, max_new_tokens: int | Sequence[int] = 512,
                     stop: Sequence[str] | None = None, seed: int | None = None,
                     min_new_tokens: int = 0) -> list[Completion]:
        """``generate`` for prompts already tokenized by :meth:`prompt_ids`."""
        if not prompts:
            return []
        torch = self._torch
        RowBudget, _ = _criteria()
        lens = [len(p) for p in prompts]
        budgets = self._budgets(lens, max_new_tokens)
        stops = [*self.stop_texts, *(stop or [])]
        batch = self.tokenizer.pad({"input_ids": [list(p) for p in prompts]}, padding_side="left",
                                   return_tensors="pt").to(self.device)
        width = batch["input_ids"].shape[1]
        with self._lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(
                **batch, generation_config=self._config(temperature, top_p, max(budgets),
                                                        min(min_new_tokens, min(budgets)), stops),
                stopping_criteria=[RowBudget(width, budgets, self.device)], tokenizer=self.tokenizer)
        stop_ids = set(self.stop_ids)
        results = []
        for row, n_prompt, budget in zip(out[:, width:].tolist(), lens, budgets):
            row = row[:budget]  # after its budget a row holds only padding
            end = next((i for i, t in enumerate(row) if t in stop_ids), None)
            text = self.tokenizer.decode(row[:end], skip_special_tokens=True)
            text, found = cut_at_stop(text, stops)
            finished = end is not None or found
            results.append(Completion(text, "stop" if finished else "length", n_prompt,
                                      len(row) if end is None else end))
        return results

    def stream(self, turns: Sequence[Turn], role: str, system: str | None = None, **kwargs) -> TextStream:
        """Text pieces of the next ``role`` turn as they are generated; ``.completion`` at the end.

        Takes the keyword arguments of :meth:`generate` (one ``max_new_tokens``). Raises
        ContextOverflow at once, before any piece, when the prompt does not fit.
        """
        return self.stream_ids(self.prompt_ids(turns, role, system), **kwargs)

    def stream_ids(self, prompt: Sequence[int], *, temperature: float = 0.7, top_p: float = 1.0,
                   max_new_tokens: int = 512, stop: Sequence[str] | None = None,
                   seed: int | None = None, min_new_tokens: int = 0) -> TextStream:
        """``stream`` for a prompt already tokenized by :meth:`prompt_ids`."""
        prompt = list(prompt)
        budget = self._budgets([len(prompt)], max_new_tokens)[0]
        stops = [*self.stop_texts, *(stop or [])]
        streamer = _QueueStreamer()
        result = TextStream(iter(()))
        _, Cancelled = _criteria()
        torch = self._torch
        errors: list[BaseException] = []

        def run():
            try:
                with self._lock, torch.inference_mode():
                    if seed is not None:
                        torch.manual_seed(seed)
                    self.model.generate(
                        input_ids=torch.tensor([prompt], device=self.device),
                        attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=self.device),
                        generation_config=self._config(temperature, top_p, budget,
                                                       min(min_new_tokens, budget), stops),
                        stopping_criteria=[Cancelled(result.cancel)], tokenizer=self.tokenizer,
                        streamer=streamer)
            except BaseException as err:  # surfaced in the consuming thread
                errors.append(err)
                streamer.end()

        result._pieces = self._pieces(run, streamer, result, stops, len(prompt), errors)
        return result

    def _pieces(self, run, streamer: _QueueStreamer, result: TextStream, stops: list[str], n_prompt: int,
                errors: list[BaseException]) -> Iterator[str]:
        """Run ``run`` (the generate call) in a thread and yield its text as it comes, holding back what may
        begin a stop string; sets ``result.completion`` at the end."""
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        text, shown, n_tokens, ended, full = _IncrementalText(self.tokenizer), 0, 0, False, ""
        stop_ids = set(self.stop_ids)
        try:
            while (ids := streamer.queue.get()) is not None:
                if ended:
                    continue  # drain until generate() returns
                end = next((i for i, t in enumerate(ids) if t in stop_ids), None)
                if end is not None:
                    ended, ids = True, ids[:end]
                n_tokens += len(ids)
                full += text.add(ids)
                visible, found = cut_at_stop(full, stops)
                ended = ended or found
                upto = len(visible) if ended else len(visible) - held_back(visible, stops)
                if upto > shown:
                    yield full[shown:upto]
                    shown = upto
                if ended:
                    result.cancel.set()
            thread.join()
            if errors:
                raise errors[0]
            if not ended and shown < len(full):  # no stop: show what was held back
                yield full[shown:]
            result.completion = Completion(cut_at_stop(full, stops)[0], "stop" if ended else "length", n_prompt,
                                           n_tokens)
        finally:
            result.cancel.set()


def end_of_turn(tokenizer, template: Template) -> tuple[list[int], list[str]]:
    """The template's end-of-turn markers: token ids for those that are one token, else strings."""
    stops = template.stop_strings()
    vocab = tokenizer.get_vocab()
    ids = sorted({vocab[s] for s in stops if s in vocab} | {tokenizer.eos_token_id})
    return ids, [s for s in stops if s not in vocab]


def default_max_context(config, tokenizer) -> int:
    """The model's max_position_embeddings, capped by the tokenizer's own limit when it has one."""
    limit = getattr(config, "max_position_embeddings", None) or 2048
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < SANE_MAX_LENGTH:
        limit = min(limit, tok_limit)
    return int(limit)
