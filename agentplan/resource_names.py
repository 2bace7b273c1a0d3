"""``ResourceName``: Flink Agents 0.3's class-name constants for ``ResourceDescriptor(clazz=...)``.

The constants keep upstream's member names and values (the upstream class paths), so a ported
agent needs no edit. :func:`resolve_class_name` maps each upstream class we implement to ours (the
OpenAI chat model serves every OpenAI-compatible server: vLLM, Ollama's ``/v1``, LiteLLM, ...); a
class we do not implement is a :class:`ResourceError` naming the constant when a descriptor uses
it, never at import. Other integrations add their classes to ``IMPLEMENTED``.
"""

from __future__ import annotations

from agentplan.exceptions import ResourceError

_CHAT = "flink_agents.integrations.chat_models"
_EMBEDDING = "flink_agents.integrations.embedding_models"
_VECTOR = "flink_agents.integrations.vector_stores"
#: Java-backed resources have no Python class at all; their constants only need to be recognisable.
_JAVA = "java:"


class ResourceName:
    """Class names for ``ResourceDescriptor(clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_CONNECTION, ...)``."""

    class ChatModel:
        ANTHROPIC_CONNECTION = f"{_CHAT}.anthropic.anthropic_chat_model.AnthropicChatModelConnection"
        ANTHROPIC_SETUP = f"{_CHAT}.anthropic.anthropic_chat_model.AnthropicChatModelSetup"
        AZURE_OPENAI_CONNECTION = f"{_CHAT}.azure.azure_openai_chat_model.AzureOpenAIChatModelConnection"
        AZURE_OPENAI_SETUP = f"{_CHAT}.azure.azure_openai_chat_model.AzureOpenAIChatModelSetup"
        OLLAMA_CONNECTION = f"{_CHAT}.ollama_chat_model.OllamaChatModelConnection"
        OLLAMA_SETUP = f"{_CHAT}.ollama_chat_model.OllamaChatModelSetup"
        OPENAI_COMPLETIONS_CONNECTION = f"{_CHAT}.openai.openai_chat_model.OpenAIChatModelConnection"
        OPENAI_COMPLETIONS_SETUP = f"{_CHAT}.openai.openai_chat_model.OpenAIChatModelSetup"
        TONGYI_CONNECTION = f"{_CHAT}.tongyi_chat_model.TongyiChatModelConnection"
        TONGYI_SETUP = f"{_CHAT}.tongyi_chat_model.TongyiChatModelSetup"
        JAVA_WRAPPER_CONNECTION = "flink_agents.api.chat_models.java_chat_model.JavaChatModelConnection"
        JAVA_WRAPPER_SETUP = "flink_agents.api.chat_models.java_chat_model.JavaChatModelSetup"

        class Java:
            ANTHROPIC_CONNECTION = f"{_JAVA}ResourceName.ChatModel.Java.ANTHROPIC_CONNECTION"
            ANTHROPIC_SETUP = f"{_JAVA}ResourceName.ChatModel.Java.ANTHROPIC_SETUP"
            AZURE_CONNECTION = f"{_JAVA}ResourceName.ChatModel.Java.AZURE_CONNECTION"
            AZURE_SETUP = f"{_JAVA}ResourceName.ChatModel.Java.AZURE_SETUP"
            AZURE_OPENAI_CONNECTION = f"{_JAVA}ResourceName.ChatModel.Java.AZURE_OPENAI_CONNECTION"
            AZURE_OPENAI_SETUP = f"{_JAVA}ResourceName.ChatModel.Java.AZURE_OPENAI_SETUP"
            BEDROCK_CONNECTION = f"{_JAVA}ResourceName.ChatModel.Java.BEDROCK_CONNECTION"
            BEDROCK_SETUP = f"{_JAVA}ResourceName.ChatModel.Java.BEDROCK_SETUP"
            OLLAMA_CONNECTION = f"{_JAVA}ResourceName.ChatModel.Java.OLLAMA_CONNECTION"
            OLLAMA_SETUP = f"{_JAVA}ResourceName.ChatModel.Java.OLLAMA_SETUP"
            OPENAI_COMPLETIONS_CONNECTION = f"{_JAVA}ResourceName.ChatModel.Java.OPENAI_COMPLETIONS_CONNECTION"
            OPENAI_COMPLETIONS_SETUP = f"{_JAVA}ResourceName.ChatModel.Java.OPENAI_COMPLETIONS_SETUP"
            OPENAI_RESPONSES_CONNECTION = f"{_JAVA}ResourceName.ChatModel.Java.OPENAI_RESPONSES_CONNECTION"
            OPENAI_RESPONSES_SETUP = f"{_JAVA}ResourceName.ChatModel.Java.OPENAI_RESPONSES_SETUP"

    class EmbeddingModel:
        OLLAMA_CONNECTION = f"{_EMBEDDING}.local.ollama_embedding_model.OllamaEmbeddingModelConnection"
        OLLAMA_SETUP = f"{_EMBEDDING}.local.ollama_embedding_model.OllamaEmbeddingModelSetup"
        OPENAI_CONNECTION = f"{_EMBEDDING}.openai_embedding_model.OpenAIEmbeddingModelConnection"
        OPENAI_SETUP = f"{_EMBEDDING}.openai_embedding_model.OpenAIEmbeddingModelSetup"
        TONGYI_CONNECTION = f"{_EMBEDDING}.tongyi_embedding_model.TongyiEmbeddingModelConnection"
        TONGYI_SETUP = f"{_EMBEDDING}.tongyi_embedding_model.TongyiEmbeddingModelSetup"
        JAVA_WRAPPER_CONNECTION = "flink_agents.api.embedding_models.java_embedding_model.JavaEmbeddingModelConnection"
        JAVA_WRAPPER_SETUP = "flink_agents.api.embedding_models.java_embedding_model.JavaEmbeddingModelSetup"

        class Java:
            OLLAMA_CONNECTION = f"{_JAVA}ResourceName.EmbeddingModel.Java.OLLAMA_CONNECTION"
            OLLAMA_SETUP = f"{_JAVA}ResourceName.EmbeddingModel.Java.OLLAMA_SETUP"
            BEDROCK_CONNECTION = f"{_JAVA}ResourceName.EmbeddingModel.Java.BEDROCK_CONNECTION"
            BEDROCK_SETUP = f"{_JAVA}ResourceName.EmbeddingModel.Java.BEDROCK_SETUP"

    class VectorStore:
        CHROMA_VECTOR_STORE = f"{_VECTOR}.chroma.chroma_vector_store.ChromaVectorStore"
        MEM0_VECTOR_STORE = f"{_VECTOR}.mem0.mem0_vector_store.Mem0VectorStore"
        JAVA_WRAPPER_VECTOR_STORE = "flink_agents.api.vector_stores.java_vector_store.JavaVectorStore"
        JAVA_WRAPPER_COLLECTION_MANAGEABLE_VECTOR_STORE = (
            "flink_agents.api.vector_stores.java_vector_store.JavaCollectionManageableVectorStore")

        class Java:
            ELASTICSEARCH_VECTOR_STORE = f"{_JAVA}ResourceName.VectorStore.Java.ELASTICSEARCH_VECTOR_STORE"
            OPENSEARCH_VECTOR_STORE = f"{_JAVA}ResourceName.VectorStore.Java.OPENSEARCH_VECTOR_STORE"
            S3_VECTORS_VECTOR_STORE = f"{_JAVA}ResourceName.VectorStore.Java.S3_VECTORS_VECTOR_STORE"
            MILVUS_VECTOR_STORE = f"{_JAVA}ResourceName.VectorStore.Java.MILVUS_VECTOR_STORE"

    MCP_SERVER = "flink_agents.integrations.mcp.mcp.MCPServer"


#: Upstream class path -> the ``module:Class`` that implements it here.
IMPLEMENTED: dict[str, str] = {
    ResourceName.ChatModel.OPENAI_COMPLETIONS_CONNECTION: "agentplan.integrations.openai:OpenAIChatModelConnection",
    ResourceName.ChatModel.OPENAI_COMPLETIONS_SETUP: "agentplan.integrations.openai:OpenAIChatModelSetup",
    ResourceName.MCP_SERVER: "agentplan.integrations.mcp:MCPServer",
    ResourceName.EmbeddingModel.OPENAI_CONNECTION:
        "agentplan.integrations.openai_embedding:OpenAIEmbeddingModelConnection",
    ResourceName.EmbeddingModel.OPENAI_SETUP: "agentplan.integrations.openai_embedding:OpenAIEmbeddingModelSetup",
    ResourceName.VectorStore.CHROMA_VECTOR_STORE: "agentplan.integrations.chroma:ChromaVectorStore",
}


def _constant_names() -> dict[str, str]:
    names: dict[str, str] = {}

    def walk(owner: type, prefix: str) -> None:
        for attr, value in vars(owner).items():
            if isinstance(value, type):
                walk(value, f"{prefix}.{attr}")
            elif isinstance(value, str) and attr.isupper():
                names[value] = f"{prefix}.{attr}"

    walk(ResourceName, "ResourceName")
    return names


def resolve_class_name(clazz: str) -> str:
    """The import path to use for ``clazz``: ours for an upstream class we implement, ``clazz`` itself
    for anything else that is not upstream's; an upstream class we lack raises naming its constant."""
    ours = IMPLEMENTED.get(clazz)
    if ours is not None:
        return ours
    if clazz.startswith((_JAVA, "flink_agents.", "org.apache.flink.agents.")):
        constant = _constant_names().get(clazz)
        what = f"{constant} ({clazz})" if constant and not clazz.startswith(_JAVA) else constant or clazz
        if clazz.startswith(_JAVA) or ".java_" in clazz:
            hint = "Java-backed resources need Flink's JVM, which this runtime does not have"
        elif ".chat_models." in clazz:
            hint = ("for an OpenAI-compatible server (Ollama's /v1, vLLM, LiteLLM, ...) use "
                    "ResourceName.ChatModel.OPENAI_COMPLETIONS_CONNECTION / _SETUP")
        else:
            hint = "declare a resource class of your own with ResourceDescriptor(clazz='module:Class', ...)"
        raise ResourceError(f"{what} is not implemented by agentplan; {hint}")
    return clazz
