"""Model catalogs the fakes serve and validate against.

Workers AI: the 28 text-generation models of the live ``models/search`` capture in
reference/wire-formats.md §2.8 (ids, context windows, prices, flags), plus a few non-text models so
that the ``task`` filter matters. OpenRouter and Together: a small set of real ids in each
provider's spelling (Together ids are case-sensitive).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

__all__ = [
    "OPENROUTER_MODELS",
    "TOGETHER_MODELS",
    "WORKERS_AI_MODELS",
    "WORKERS_AI_TEXT_GENERATION",
    "CfModel",
    "OpenRouterModel",
    "TogetherModel",
]

WORKERS_AI_TEXT_GENERATION = "Text Generation"
_TASK_IDS = {
    WORKERS_AI_TEXT_GENERATION: "c329a1f9-323d-4e91-b2aa-582dd4188d34",
    "Text Embeddings": "0137cdcf-162a-4108-94f2-1ca59e8c65ee",
    "Text-to-Image": "3d6e1f35-341b-4915-a6c8-9a7142a9033a",
    "Automatic Speech Recognition": "dfce1c48-2a81-462e-a7fd-de97ce985207",
}


@dataclass(frozen=True, slots=True)
class CfModel:
    """One Workers AI catalog entry. `flags`: fc, r (reasoning), v (vision), paid, lora, beta."""

    name: str
    context: int
    price_in: float | None
    price_out: float | None
    flags: frozenset[str] = frozenset()
    task: str = WORKERS_AI_TEXT_GENERATION

    @property
    def id(self) -> str:
        # Stable per name, like the real catalog's uuid ids.
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "workers-ai:" + self.name))

    @property
    def task_id(self) -> str:
        return _TASK_IDS.get(self.task, "00000000-0000-4000-8000-000000000000")


def _cf(
    name: str,
    ctx: int,
    price: tuple[float, float] | None,
    flags: str = "",
    task: str = WORKERS_AI_TEXT_GENERATION,
) -> CfModel:
    pin, pout = price if price else (None, None)
    return CfModel(name, ctx, pin, pout, frozenset(flags.split()), task)


WORKERS_AI_MODELS: tuple[CfModel, ...] = (
    _cf("@cf/meta/llama-3.2-1b-instruct", 60000, (0.027, 0.201)),
    _cf("@cf/meta/llama-3.2-3b-instruct", 80000, (0.0509, 0.335), "lora"),
    _cf("@cf/meta/llama-3.1-8b-instruct-fp8", 32000, (0.152, 0.287)),
    _cf("@cf/meta/llama-3.2-11b-vision-instruct", 128000, (0.0485, 0.676), "v lora"),
    _cf("@cf/meta/llama-3.3-70b-instruct-fp8-fast", 24000, (0.293, 2.253), "fc"),
    _cf("@cf/meta/llama-4-scout-17b-16e-instruct", 131000, (0.27, 0.85), "fc v"),
    _cf("@cf/meta/llama-guard-3-8b", 131072, (0.484, 0.03), "lora"),
    _cf("@cf/meta-llama/llama-2-7b-chat-hf-lora", 8192, None, "lora beta"),
    _cf("@cf/mistral/mistral-7b-instruct-v0.2-lora", 15000, None, "lora beta"),
    _cf("@cf/mistralai/mistral-small-3.1-24b-instruct", 128000, (0.351, 0.555), "fc"),
    _cf("@cf/google/gemma-2b-it-lora", 8192, None, "lora beta"),
    _cf("@cf/google/gemma-7b-it-lora", 3500, None, "lora beta"),
    _cf("@cf/google/gemma-4-26b-a4b-it", 256000, (0.1, 0.3), "fc r v"),
    _cf("@cf/aisingapore/gemma-sea-lion-v4-27b-it", 128000, (0.351, 0.555)),
    _cf("@cf/ibm-granite/granite-4.0-h-micro", 131000, (0.017, 0.112), "fc"),
    _cf("@cf/qwen/qwen2.5-coder-32b-instruct", 32768, (0.66, 1.0), "lora"),
    _cf("@cf/qwen/qwq-32b", 24000, (0.66, 1.0), "r lora"),
    _cf("@cf/qwen/qwen3-30b-a3b-fp8", 32768, (0.0509, 0.335), "fc r"),
    _cf("@cf/deepseek-ai/deepseek-r1-distill-qwen-32b", 80000, (0.497, 4.881), "r"),
    _cf("@cf/deepseek-ai/deepseek-v4-flash-0731", 1310720, (0.44, 1.32), "fc r paid"),
    _cf("@cf/deepseek-ai/deepseek-v4-pro-0813", 1048576, (1.32, 3.96), "fc r paid"),
    _cf("@cf/openai/gpt-oss-20b", 128000, (0.2, 0.3), "fc r"),
    _cf("@cf/openai/gpt-oss-120b", 128000, (0.35, 0.75), "fc r"),
    _cf("@cf/nvidia/nemotron-3-120b-a12b", 256000, (0.5, 1.5), "fc r"),
    _cf("@cf/zai-org/glm-4.7-flash", 131072, (0.0605, 0.4), "fc r"),
    _cf("@cf/zai-org/glm-5.2", 262144, (1.4, 4.4), "fc r paid"),
    _cf("@cf/moonshotai/kimi-k2.6", 262144, (0.95, 4.0), "fc r v paid"),
    _cf("@cf/moonshotai/kimi-k2.7-code", 262144, (0.95, 4.0), "fc r v paid"),
    # Non-text models: listed by models/search under their own task, refused by the chat paths.
    _cf("@cf/baai/bge-base-en-v1.5", 512, (0.067, 0.0), task="Text Embeddings"),
    _cf("@cf/black-forest-labs/flux-1-schnell", 2048, None, task="Text-to-Image"),
    _cf("@cf/openai/whisper", 0, None, task="Automatic Speech Recognition"),
)


@dataclass(frozen=True, slots=True)
class OpenRouterModel:
    """One OpenRouter catalog entry; `slug` is the (often dated) id responses report."""

    id: str
    slug: str
    name: str
    context: int
    prompt_price: str  # USD per token, as a string like the real API
    completion_price: str
    provider: str
    reasoning: bool = False


OPENROUTER_MODELS: tuple[OpenRouterModel, ...] = (
    OpenRouterModel(
        "meta-llama/llama-3.2-3b-instruct",
        "meta-llama/llama-3.2-3b-instruct",
        "Meta: Llama 3.2 3B Instruct",
        131072,
        "0.00000002",
        "0.00000002",
        "DeepInfra",
    ),
    OpenRouterModel(
        "meta-llama/llama-3.1-8b-instruct",
        "meta-llama/llama-3.1-8b-instruct",
        "Meta: Llama 3.1 8B Instruct",
        131072,
        "0.00000002",
        "0.00000003",
        "DeepInfra",
    ),
    OpenRouterModel(
        "meta-llama/llama-3.3-70b-instruct",
        "meta-llama/llama-3.3-70b-instruct",
        "Meta: Llama 3.3 70B Instruct",
        131072,
        "0.00000013",
        "0.00000039",
        "Together",
    ),
    OpenRouterModel(
        "meta-llama/llama-4-scout",
        "meta-llama/llama-4-scout-17b-16e-instruct",
        "Meta: Llama 4 Scout",
        327680,
        "0.00000008",
        "0.0000003",
        "Groq",
    ),
    OpenRouterModel(
        "mistralai/mistral-small-3.1-24b-instruct",
        "mistralai/mistral-small-3.1-24b-instruct-2503",
        "Mistral: Mistral Small 3.1 24B",
        131072,
        "0.00000005",
        "0.0000001",
        "Mistral",
    ),
    OpenRouterModel(
        "qwen/qwen3.5-35b-a3b",
        "qwen/qwen3.5-35b-a3b-20260224",
        "Qwen: Qwen3.5 35B A3B",
        262144,
        "0.00000014",
        "0.000001",
        "DeepInfra",
        reasoning=True,
    ),
    OpenRouterModel(
        "deepseek/deepseek-r1-distill-qwen-32b",
        "deepseek/deepseek-r1-distill-qwen-32b",
        "DeepSeek: R1 Distill Qwen 32B",
        131072,
        "0.00000027",
        "0.00000027",
        "DeepInfra",
        reasoning=True,
    ),
    OpenRouterModel(
        "openai/gpt-4o-mini",
        "openai/gpt-4o-mini-2024-07-18",
        "OpenAI: GPT-4o-mini",
        128000,
        "0.00000015",
        "0.0000006",
        "OpenAI",
    ),
    OpenRouterModel(
        "openai/gpt-oss-20b",
        "openai/gpt-oss-20b",
        "OpenAI: gpt-oss-20b",
        131072,
        "0.00000003",
        "0.00000014",
        "DeepInfra",
        reasoning=True,
    ),
    OpenRouterModel(
        "google/gemma-3-27b-it",
        "google/gemma-3-27b-it",
        "Google: Gemma 3 27B",
        131072,
        "0.00000009",
        "0.00000017",
        "DeepInfra",
    ),
    OpenRouterModel(
        "openrouter/auto", "openrouter/auto", "Auto Router", 2000000, "-1", "-1", "OpenAI"
    ),
)


@dataclass(frozen=True, slots=True)
class TogetherModel:
    """One Together catalog entry (`type` is chat, language, embedding, image, ...)."""

    id: str
    display_name: str
    organization: str
    type: str
    context: int
    price_in: float
    price_out: float


TOGETHER_MODELS: tuple[TogetherModel, ...] = (
    TogetherModel(
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "Meta Llama 3.3 70B Instruct Turbo",
        "Meta",
        "chat",
        131072,
        0.88,
        0.88,
    ),
    TogetherModel(
        "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
        "Meta Llama 3.1 8B Instruct Turbo",
        "Meta",
        "chat",
        131072,
        0.18,
        0.18,
    ),
    TogetherModel(
        "meta-llama/Llama-3.2-3B-Instruct-Turbo",
        "Meta Llama 3.2 3B Instruct Turbo",
        "Meta",
        "chat",
        131072,
        0.06,
        0.06,
    ),
    TogetherModel(
        "meta-llama/Llama-4-Scout-17B-16E-Instruct",
        "Llama 4 Scout Instruct (17Bx16E)",
        "Meta",
        "chat",
        1048576,
        0.18,
        0.59,
    ),
    TogetherModel("openai/gpt-oss-20b", "OpenAI GPT-OSS 20B", "OpenAI", "chat", 131072, 0.05, 0.2),
    TogetherModel(
        "openai/gpt-oss-120b", "OpenAI GPT-OSS 120B", "OpenAI", "chat", 131072, 0.15, 0.6
    ),
    TogetherModel("Qwen/Qwen3.5-35B-A3B", "Qwen3.5 35B A3B", "Qwen", "chat", 262144, 0.2, 0.6),
    TogetherModel(
        "mistralai/Mistral-7B-Instruct-v0.3",
        "Mistral (7B) Instruct v0.3",
        "mistralai",
        "chat",
        32768,
        0.2,
        0.2,
    ),
    TogetherModel(
        "mistralai/Mistral-Small-24B-Instruct-2501",
        "Mistral Small (24B) Instruct 25.01",
        "mistralai",
        "chat",
        32768,
        0.8,
        0.8,
    ),
    TogetherModel(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
        "DeepSeek R1 Distill Qwen 32B",
        "DeepSeek",
        "chat",
        131072,
        1.6,
        1.6,
    ),
    TogetherModel("google/gemma-3-27b-it", "Gemma 3 27B", "Google", "chat", 131072, 0.8, 0.8),
    TogetherModel(
        "BAAI/bge-base-en-v1.5", "BAAI-Bge-Base-1.5", "BAAI", "embedding", 512, 0.008, 0.0
    ),
    TogetherModel(
        "black-forest-labs/FLUX.1-schnell",
        "FLUX.1 Schnell",
        "Black Forest Labs",
        "image",
        0,
        0.0,
        0.0,
    ),
)
