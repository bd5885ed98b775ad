"""Input and output serializers of the inference endpoints (native, OpenAI-compatible, /ask, knowledge)."""

from rest_framework import serializers

from inference.models import BenchmarkRun, KnowledgeDocument

MAX_STOP_SEQUENCES = 4
MAX_STOP_LENGTH = 64


def _stop_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise serializers.ValidationError("Give a string or a list of strings.")
    if len(value) > MAX_STOP_SEQUENCES:
        raise serializers.ValidationError(f"At most {MAX_STOP_SEQUENCES} stop sequences.")
    if any(len(item) > MAX_STOP_LENGTH for item in value):
        raise serializers.ValidationError(f"Stop sequences are at most {MAX_STOP_LENGTH} characters.")
    return [item for item in value if item]


class _SamplingInput(serializers.Serializer):
    model = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=200)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=2.0)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=1.0)
    stop = serializers.JSONField(required=False, allow_null=True)
    stream = serializers.BooleanField(required=False, default=False)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=2**32 - 1)
    # OpenAI's {token id: bias from -100 (never) to 100 (always)}, on /generate too.
    logit_bias = serializers.DictField(child=serializers.FloatField(min_value=-100, max_value=100), required=False)

    def validate_stop(self, value):
        return _stop_list(value)

    def validate_logit_bias(self, value):
        for key in value:
            if not str(key).isdigit():
                raise serializers.ValidationError("Keys are token ids.")
        return {str(key): bias for key, bias in value.items()}


# --- Native endpoints ---------------------------------------------------------------------


class EmbedInput(serializers.Serializer):
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    texts = serializers.ListField(child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False)
    model = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=200)

    def validate(self, attrs):
        if ("text" in attrs) == ("texts" in attrs):
            raise serializers.ValidationError(
                {"text": ["Give either `text` (one string) or `texts` (a list), not both."]}
            )
        if "texts" in attrs and not attrs["texts"]:
            raise serializers.ValidationError({"texts": ["Give at least one text."]})
        return attrs


def embed_input(data) -> dict:
    """`EmbedInput`'s validated data, without building a serializer for the common shapes.

    Every /embed request pays for instantiating a serializer (DRF deep-copies
    its fields each time), which costs more than the rest of the request's
    Python. A plain `{"text": str}` or `{"texts": [str, ...]}` with an
    optional string `model` is accepted as is; anything else goes through
    `EmbedInput` for the same answer and its field errors.
    """
    if isinstance(data, dict) and set(data) <= {"text", "texts", "model"}:
        model = data.get("model")
        if model is None or (isinstance(model, str) and len(model) <= 200):
            text, texts = data.get("text"), data.get("texts")
            if isinstance(text, str) and texts is None:
                return {"text": text, "model": model}
            if text is None and isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts):
                return {"texts": texts, "model": model}
    serializer = EmbedInput(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class GenerateInput(_SamplingInput):
    prompt = serializers.CharField(allow_blank=True, trim_whitespace=False)
    max_tokens = serializers.IntegerField(required=False, default=128, min_value=1)


# --- OpenAI-compatible endpoints -------------------------------------------------------------


class OpenAIEmbeddingsInput(serializers.Serializer):
    input = serializers.JSONField()
    model = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=200)
    encoding_format = serializers.ChoiceField(choices=["float", "base64"], required=False, default="float")
    dimensions = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    user = serializers.CharField(required=False, allow_blank=True)

    def validate_dimensions(self, value):
        if value is not None:
            raise serializers.ValidationError("Choosing the number of dimensions is not supported; leave it out.")
        return value

    def validate_input(self, value):
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            return value
        if isinstance(value, list) and value and all(isinstance(item, int | list) for item in value):
            raise serializers.ValidationError("Token arrays are not accepted; send the text.")
        raise serializers.ValidationError("Give a string or a non-empty list of strings.")


def openai_embeddings_input(data) -> dict:
    """`OpenAIEmbeddingsInput`'s validated data; the common shapes skip the serializer (see `embed_input`)."""
    if isinstance(data, dict) and set(data) <= {"input", "model", "encoding_format", "user"}:
        value, model = data.get("input"), data.get("model")
        encoding = data.get("encoding_format", "float")
        texts = [value] if isinstance(value, str) else value
        if (
            isinstance(texts, list)
            and texts
            and all(isinstance(t, str) for t in texts)
            and (model is None or (isinstance(model, str) and len(model) <= 200))
            and encoding in ("float", "base64")
        ):
            return {"input": texts, "model": model, "encoding_format": encoding}
    serializer = OpenAIEmbeddingsInput(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ChatMessageInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "developer", "user", "assistant"])
    content = serializers.JSONField(allow_null=True)
    name = serializers.CharField(required=False, allow_blank=True)

    def validate_content(self, value):
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            texts = []
            for part in value:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise serializers.ValidationError(
                        "Only text content parts ({'type': 'text', 'text': ...}) are accepted."
                    )
                texts.append(part["text"])
            return "\n".join(texts)
        raise serializers.ValidationError("Give the content as a string or a list of text parts.")

    def validate(self, attrs):
        # Templates know system/user/assistant; OpenAI's `developer` is a system message.
        if attrs["role"] == "developer":
            attrs["role"] = "system"
        return {"role": attrs["role"], "content": attrs["content"]}


class _OpenAIGenerationInput(_SamplingInput):
    n = serializers.IntegerField(required=False, default=1, min_value=1)
    stream_options = serializers.DictField(required=False, allow_null=True)
    presence_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2.0, max_value=2.0)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2.0, max_value=2.0)
    user = serializers.CharField(required=False, allow_blank=True)

    def validate_n(self, value):
        if value != 1:
            raise serializers.ValidationError("Only n=1 is served.")
        return value


class ChatCompletionInput(_OpenAIGenerationInput):
    messages = ChatMessageInput(many=True, allow_empty=False)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)

    def validate(self, attrs):
        if attrs.get("max_tokens") is None and attrs.get("max_completion_tokens") is not None:
            attrs["max_tokens"] = attrs["max_completion_tokens"]
        return attrs


class CompletionInput(_OpenAIGenerationInput):
    prompt = serializers.JSONField()
    echo = serializers.BooleanField(required=False, default=False)

    def validate_prompt(self, value):
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            value = value[0]
        if not isinstance(value, str):
            raise serializers.ValidationError("Give one prompt as a string.")
        return value

    def validate_echo(self, value):
        if value:
            raise serializers.ValidationError("echo is not supported.")
        return value


# --- /ask, knowledge, benchmarks ---------------------------------------------------------------


class AskInput(serializers.Serializer):
    query = serializers.CharField(max_length=4000)


class AskOutput(serializers.Serializer):
    answer = serializers.CharField()
    path = serializers.CharField()
    search = serializers.CharField()
    similarity = serializers.FloatField(allow_null=True)
    documents = serializers.ListField(child=serializers.DictField())
    model = serializers.CharField()
    reason = serializers.CharField()
    steps = serializers.ListField(child=serializers.DictField())
    latency_ms = serializers.FloatField()


class KnowledgeDocumentInput(serializers.Serializer):
    title = serializers.CharField(max_length=300)
    content = serializers.CharField(max_length=200_000)
    source = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class KnowledgeDocumentOutput(serializers.ModelSerializer):
    embedded = serializers.SerializerMethodField()

    class Meta:
        model = KnowledgeDocument
        fields = ["id", "title", "content", "source", "embedded", "embedding_model", "created_at", "updated_at"]

    def get_embedded(self, document) -> bool:
        return bool(document.embedding)


class BenchmarkRequestInput(serializers.Serializer):
    manifest = serializers.CharField(help_text="Manifest id or name@version.")


class BenchmarkRunOutput(serializers.ModelSerializer):
    manifest_label = serializers.SerializerMethodField()

    class Meta:
        model = BenchmarkRun
        fields = [
            "id",
            "manifest",
            "manifest_label",
            "status",
            "progress",
            "stage",
            "worker",
            "hardware",
            "library_versions",
            "parameters",
            "results",
            "error",
            "created_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
            "evidence_cid",
        ]

    def get_manifest_label(self, run) -> str:
        return str(run.manifest)
