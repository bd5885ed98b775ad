"""Request bodies of a serving node, validated as the platform's serializers validate them.

Django-free twins of `inference/api/serializers.py`: same fields, same
bounds, same refusals, so a client cannot tell a node from the platform.
"""

from dataclasses import dataclass, field

MAX_STOP_SEQUENCES = 4
MAX_STOP_LENGTH = 64
MAX_MODEL_NAME = 200


class InvalidRequest(ValueError):
    def __init__(self, message: str, *, code: str = "invalid", status: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass
class GenerationParams:
    mode: str  # completion | chat
    prompt: str = ""
    messages: list[dict] = field(default_factory=list)
    model: str | None = None
    max_tokens: int | None = None
    temperature: float = 0.8
    top_p: float = 0.95
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stream: bool = False


def _object(data) -> dict:
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return data


def _model(data: dict) -> str | None:
    model = data.get("model")
    if model in (None, ""):
        return None
    if not isinstance(model, str) or len(model) > MAX_MODEL_NAME:
        raise InvalidRequest(f"model: give a model name of at most {MAX_MODEL_NAME} characters.")
    return model


def _number(data: dict, name: str, *, default, low: float, high: float, integer: bool = False):
    value = data.get(name)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise InvalidRequest(f"{name}: give {kind} from {low:g} to {high:g}.")
    return value


def _stop(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidRequest("stop: give a string or a list of strings.")
    if len(value) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"stop: at most {MAX_STOP_SEQUENCES} stop sequences.")
    if any(len(item) > MAX_STOP_LENGTH for item in value):
        raise InvalidRequest(f"stop: stop sequences are at most {MAX_STOP_LENGTH} characters.")
    return [item for item in value if item]


def _sampling(data: dict, *, mode: str, default_max_tokens: int | None) -> GenerationParams:
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: give true or false.")
    max_tokens = _number(data, "max_tokens", default=None, low=1, high=2**31, integer=True)
    return GenerationParams(
        mode=mode,
        model=_model(data),
        max_tokens=max_tokens if max_tokens is not None else default_max_tokens,
        temperature=float(_number(data, "temperature", default=0.8, low=0.0, high=2.0)),
        top_p=float(_number(data, "top_p", default=0.95, low=0.0, high=1.0)),
        stop=_stop(data.get("stop")),
        seed=_number(data, "seed", default=None, low=0, high=2**32 - 1, integer=True),
        stream=stream,
    )


def _logit_bias(data: dict) -> dict[int, float]:
    bias = data.get("logit_bias")
    if bias is None:
        return {}
    if not isinstance(bias, dict):
        raise InvalidRequest("logit_bias: give an object of token id -> bias.")
    for key, value in bias.items():
        if not str(key).isdigit():
            raise InvalidRequest("logit_bias: keys are token ids.")
        if isinstance(value, bool) or not isinstance(value, int | float) or not -100 <= value <= 100:
            raise InvalidRequest("logit_bias: biases are numbers from -100 to 100.")
    return {int(key): float(value) for key, value in bias.items()}


def _openai_extras(params: GenerationParams, data: dict) -> GenerationParams:
    if _number(data, "n", default=1, low=1, high=2**31, integer=True) != 1:
        raise InvalidRequest("n: only n=1 is served.")
    params.logit_bias = _logit_bias(data)
    params.presence_penalty = float(_number(data, "presence_penalty", default=0.0, low=-2.0, high=2.0))
    params.frequency_penalty = float(_number(data, "frequency_penalty", default=0.0, low=-2.0, high=2.0))
    return params


def generate_params(data) -> GenerationParams:
    """POST /generate {prompt, model?, max_tokens (128), temperature, top_p, stop, seed, stream, logit_bias}."""
    data = _object(data)
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt: give the prompt as a string.")
    params = _sampling(data, mode="completion", default_max_tokens=128)
    params.prompt = prompt
    params.logit_bias = _logit_bias(data)
    return params


def completion_params(data) -> GenerationParams:
    """POST /v1/completions (OpenAI's default of 16 tokens when max_tokens is absent)."""
    data = _object(data)
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt: give one prompt as a string.")
    if data.get("echo"):
        raise InvalidRequest("echo: echo is not supported.")
    params = _openai_extras(_sampling(data, mode="completion", default_max_tokens=16), data)
    params.prompt = prompt
    return params


def _message(message, index: int) -> dict:
    if not isinstance(message, dict):
        raise InvalidRequest(f"messages[{index}]: give an object with role and content.")
    role = message.get("role")
    if role not in ("system", "developer", "user", "assistant"):
        raise InvalidRequest(f"messages[{index}].role: choose system, developer, user or assistant.")
    content = message.get("content")
    if content is None:
        content = ""
    elif isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(
                    f"messages[{index}].content: only text parts ({{'type': 'text', 'text': ...}}) are accepted."
                )
            texts.append(part["text"])
        content = "\n".join(texts)
    elif not isinstance(content, str):
        raise InvalidRequest(f"messages[{index}].content: give a string or a list of text parts.")
    # Templates know system/user/assistant; OpenAI's `developer` is a system message.
    return {"role": "system" if role == "developer" else role, "content": content}


def chat_params(data) -> GenerationParams:
    """POST /v1/chat/completions; without max_tokens, up to the governed limit and the context."""
    data = _object(data)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: give a non-empty list of messages.")
    if data.get("max_tokens") is None and data.get("max_completion_tokens") is not None:
        data = {**data, "max_tokens": data["max_completion_tokens"]}
    params = _openai_extras(_sampling(data, mode="chat", default_max_tokens=None), data)
    params.messages = [_message(message, index) for index, message in enumerate(messages)]
    return params


def embed_texts(data) -> tuple[list[str], bool, str | None]:
    """POST /embed {text | texts[], model?} -> (texts, single, model)."""
    data = _object(data)
    text, texts = data.get("text"), data.get("texts")
    if (text is None) == (texts is None):
        raise InvalidRequest("Give either `text` (one string) or `texts` (a list), not both.")
    if text is not None:
        if not isinstance(text, str):
            raise InvalidRequest("text: give a string.")
        return [text], True, _model(data)
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("texts: give a non-empty list of strings.")
    return texts, False, _model(data)


def embeddings_input(data) -> tuple[list[str], str | None, str]:
    """POST /v1/embeddings {input, model?, encoding_format?} -> (texts, model, encoding_format)."""
    data = _object(data)
    value = data.get("input")
    if data.get("dimensions") is not None:
        raise InvalidRequest("dimensions: choosing the number of dimensions is not supported; leave it out.")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise InvalidRequest("encoding_format: choose float or base64.")
    texts = [value] if isinstance(value, str) else value
    if isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts):
        return texts, _model(data), encoding
    if isinstance(texts, list) and texts and all(isinstance(t, int | list) for t in texts):
        raise InvalidRequest("input: token arrays are not accepted; send the text.")
    raise InvalidRequest("input: give a string or a non-empty list of strings.")
