"""The Milvus store's collections: their schemas and indexes (see rag.store_milvus for the layout)."""

from __future__ import annotations

from rag.store_milvus import Milvus

TEXT_BYTES = 65535  # the longest VARCHAR Milvus has
SHORT = 8192  # bytes kept of doc ids, titles, urls in chunk rows


def _stopwords() -> list[str]:
    from bm25s.stopwords import STOPWORDS_EN  # the file store's BM25 drops the same words

    return sorted(STOPWORDS_EN)


def _create(db: Milvus, name: str, schema, index_params) -> None:
    from pymilvus.exceptions import MilvusException

    try:
        db.client.create_collection(name, schema=schema, index_params=index_params, consistency_level="Strong",
                                    timeout=60)
    except MilvusException as e:
        if not db.has(name):  # created meanwhile by another process is fine
            raise db.error(e, f"creating {name}") from None
    db.load(name)


def new_schema(db: Milvus, key_length: int | None = None):
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    if key_length:
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=key_length)
    return schema, DataType, db.client.prepare_index_params()


def create_meta(db: Milvus, name: str) -> None:
    schema, DataType, index = new_schema(db, 64)
    schema.add_field("value", DataType.VARCHAR, max_length=TEXT_BYTES)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
    index.add_index(field_name="v", index_type="FLAT", metric_type="L2")
    _create(db, name, schema, index)


def create_articles(db: Milvus, name: str) -> None:
    schema, DataType, index = new_schema(db, 48)
    for field, length in (("doc_key", 32), ("doc_id", SHORT)):
        schema.add_field(field, DataType.VARCHAR, max_length=length)
    schema.add_field("part", DataType.INT64)
    schema.add_field("parts", DataType.INT64)
    schema.add_field("text", DataType.VARCHAR, max_length=TEXT_BYTES)
    schema.add_field("meta", DataType.VARCHAR, max_length=TEXT_BYTES)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
    index.add_index(field_name="v", index_type="FLAT", metric_type="L2")
    _create(db, name, schema, index)


def create_chunks(db: Milvus, name: str, dim: int) -> None:
    from pymilvus import Function, FunctionType

    schema, DataType, index = new_schema(db)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    analyzer = {"tokenizer": "standard", "filter": ["lowercase", {"type": "stop", "stop_words": _stopwords()}]}
    schema.add_field("text", DataType.VARCHAR, max_length=TEXT_BYTES, enable_analyzer=True, analyzer_params=analyzer)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    for field, length in (("chunk_id", SHORT + 64), ("doc_id", SHORT), ("doc_key", 32), ("title", SHORT),
                          ("date", 16), ("source", 1024), ("source_key", 32), ("url", SHORT), ("content_hash", 128)):
        schema.add_field(field, DataType.VARCHAR, max_length=length)
    for field in ("day", "char_start", "char_end", "ordinal", "n_tokens"):
        schema.add_field(field, DataType.INT64)
    schema.add_function(Function(name="text_bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                 output_field_names=["sparse"]))
    index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="IP")
    index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    _create(db, name, schema, index)
