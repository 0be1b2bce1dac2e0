from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegionPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGION_POLICY_UNSPECIFIED: _ClassVar[RegionPolicy]
    REGION_POLICY_NONE: _ClassVar[RegionPolicy]
    REGION_POLICY_GRID: _ClassVar[RegionPolicy]
REGION_POLICY_UNSPECIFIED: RegionPolicy
REGION_POLICY_NONE: RegionPolicy
REGION_POLICY_GRID: RegionPolicy

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("images", "texts")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, images: _Optional[_Iterable[bytes]] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "model_id")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Vector]
    model_id: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., model_id: _Optional[str] = ...) -> None: ...

class AddRequest(_message.Message):
    __slots__ = ("id", "image", "vector", "metadata", "regions", "region_policy")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    REGION_POLICY_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    vector: Vector
    metadata: _containers.ScalarMap[str, str]
    regions: _containers.RepeatedCompositeFieldContainer[Region]
    region_policy: RegionPolicy
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., regions: _Optional[_Iterable[_Union[Region, _Mapping]]] = ..., region_policy: _Optional[_Union[RegionPolicy, str]] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1", "label")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    label: str
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ..., label: _Optional[str] = ...) -> None: ...

class AddResponse(_message.Message):
    __slots__ = ("id", "replaced")
    ID_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    id: str
    replaced: bool
    def __init__(self, id: _Optional[str] = ..., replaced: _Optional[bool] = ...) -> None: ...

class AddResult(_message.Message):
    __slots__ = ("index", "id", "code", "error", "replaced")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    code: int
    error: str
    replaced: bool
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., code: _Optional[int] = ..., error: _Optional[str] = ..., replaced: _Optional[bool] = ...) -> None: ...

class AddStreamResponse(_message.Message):
    __slots__ = ("results", "stored", "failed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AddResult]
    stored: int
    failed: int
    def __init__(self, results: _Optional[_Iterable[_Union[AddResult, _Mapping]]] = ..., stored: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("image", "vector", "id", "text", "k", "min_score", "filter", "exclude_self", "box", "positives", "negatives", "negative_weight")
    class FilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SELF_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    POSITIVES_FIELD_NUMBER: _ClassVar[int]
    NEGATIVES_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    vector: Vector
    id: str
    text: str
    k: int
    min_score: float
    filter: _containers.ScalarMap[str, str]
    exclude_self: bool
    box: Region
    positives: _containers.RepeatedCompositeFieldContainer[Example]
    negatives: _containers.RepeatedCompositeFieldContainer[Example]
    negative_weight: float
    def __init__(self, image: _Optional[bytes] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., id: _Optional[str] = ..., text: _Optional[str] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ..., filter: _Optional[_Mapping[str, str]] = ..., exclude_self: _Optional[bool] = ..., box: _Optional[_Union[Region, _Mapping]] = ..., positives: _Optional[_Iterable[_Union[Example, _Mapping]]] = ..., negatives: _Optional[_Iterable[_Union[Example, _Mapping]]] = ..., negative_weight: _Optional[float] = ...) -> None: ...

class Example(_message.Message):
    __slots__ = ("image", "text", "id", "vector")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    text: str
    id: str
    vector: Vector
    def __init__(self, image: _Optional[bytes] = ..., text: _Optional[str] = ..., id: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("id", "score", "metadata", "whole_image", "region", "image")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    WHOLE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    metadata: _containers.ScalarMap[str, str]
    whole_image: bool
    region: Region
    image: ImageFacts
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., metadata: _Optional[_Mapping[str, str]] = ..., whole_image: _Optional[bool] = ..., region: _Optional[_Union[Region, _Mapping]] = ..., image: _Optional[_Union[ImageFacts, _Mapping]] = ...) -> None: ...

class ImageFacts(_message.Message):
    __slots__ = ("width", "height", "bytes")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    bytes: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("matches", "exact")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    exact: bool
    def __init__(self, matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., exact: _Optional[bool] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("id", "include_vector")
    ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    include_vector: bool
    def __init__(self, id: _Optional[str] = ..., include_vector: _Optional[bool] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("id", "metadata", "vector", "regions", "image")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    metadata: _containers.ScalarMap[str, str]
    vector: Vector
    regions: _containers.RepeatedCompositeFieldContainer[Region]
    image: ImageFacts
    def __init__(self, id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., regions: _Optional[_Iterable[_Union[Region, _Mapping]]] = ..., image: _Optional[_Union[ImageFacts, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "missing")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[int] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateMetadataRequest(_message.Message):
    __slots__ = ("ids", "set", "remove")
    class SetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IDS_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    set: _containers.ScalarMap[str, str]
    remove: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., set: _Optional[_Mapping[str, str]] = ..., remove: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateMetadataResponse(_message.Message):
    __slots__ = ("updated", "missing")
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    updated: int
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, updated: _Optional[int] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class NeighboursRequest(_message.Message):
    __slots__ = ("min_score", "k", "filter")
    class FilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    min_score: float
    k: int
    filter: _containers.ScalarMap[str, str]
    def __init__(self, min_score: _Optional[float] = ..., k: _Optional[int] = ..., filter: _Optional[_Mapping[str, str]] = ...) -> None: ...

class NeighboursResponse(_message.Message):
    __slots__ = ("items", "scanned", "total")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SCANNED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ItemNeighbours]
    scanned: int
    total: int
    def __init__(self, items: _Optional[_Iterable[_Union[ItemNeighbours, _Mapping]]] = ..., scanned: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class ItemNeighbours(_message.Message):
    __slots__ = ("id", "neighbours", "image")
    ID_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    neighbours: _containers.RepeatedCompositeFieldContainer[Neighbour]
    image: ImageFacts
    def __init__(self, id: _Optional[str] = ..., neighbours: _Optional[_Iterable[_Union[Neighbour, _Mapping]]] = ..., image: _Optional[_Union[ImageFacts, _Mapping]] = ...) -> None: ...

class Neighbour(_message.Message):
    __slots__ = ("id", "score", "image")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    image: ImageFacts
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., image: _Optional[_Union[ImageFacts, _Mapping]] = ...) -> None: ...

class ClustersRequest(_message.Message):
    __slots__ = ("count", "per_cluster", "sample")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PER_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    count: int
    per_cluster: int
    sample: int
    def __init__(self, count: _Optional[int] = ..., per_cluster: _Optional[int] = ..., sample: _Optional[int] = ...) -> None: ...

class ClustersResponse(_message.Message):
    __slots__ = ("clusters", "sampled", "total")
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedCompositeFieldContainer[Cluster]
    sampled: int
    total: int
    def __init__(self, clusters: _Optional[_Iterable[_Union[Cluster, _Mapping]]] = ..., sampled: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class Cluster(_message.Message):
    __slots__ = ("size", "representatives")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REPRESENTATIVES_FIELD_NUMBER: _ClassVar[int]
    size: int
    representatives: _containers.RepeatedCompositeFieldContainer[Match]
    def __init__(self, size: _Optional[int] = ..., representatives: _Optional[_Iterable[_Union[Match, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IndexSettings(_message.Message):
    __slots__ = ("metric", "dtype", "connectivity", "expansion_add", "expansion_search", "exact_search_below", "kernel")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CONNECTIVITY_FIELD_NUMBER: _ClassVar[int]
    EXPANSION_ADD_FIELD_NUMBER: _ClassVar[int]
    EXPANSION_SEARCH_FIELD_NUMBER: _ClassVar[int]
    EXACT_SEARCH_BELOW_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    metric: str
    dtype: str
    connectivity: int
    expansion_add: int
    expansion_search: int
    exact_search_below: int
    kernel: str
    def __init__(self, metric: _Optional[str] = ..., dtype: _Optional[str] = ..., connectivity: _Optional[int] = ..., expansion_add: _Optional[int] = ..., expansion_search: _Optional[int] = ..., exact_search_below: _Optional[int] = ..., kernel: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("items", "dims", "model_id", "random_weights", "precision", "providers", "preprocess_mode", "index", "queue_depth", "uptime_seconds", "batches", "mean_batch_size", "version", "text_enabled", "text_precision", "text_queue_depth", "index_version", "shards", "vectors", "model_family", "model_revision", "manifest_sha256", "score_scale", "disk_bytes")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    RANDOM_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_MODE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    MEAN_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_ENABLED_FIELD_NUMBER: _ClassVar[int]
    TEXT_PRECISION_FIELD_NUMBER: _ClassVar[int]
    TEXT_QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FAMILY_FIELD_NUMBER: _ClassVar[int]
    MODEL_REVISION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    SCORE_SCALE_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    items: int
    dims: int
    model_id: str
    random_weights: bool
    precision: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    preprocess_mode: str
    index: IndexSettings
    queue_depth: int
    uptime_seconds: float
    batches: int
    mean_batch_size: float
    version: str
    text_enabled: bool
    text_precision: str
    text_queue_depth: int
    index_version: str
    shards: _containers.RepeatedCompositeFieldContainer[ShardStats]
    vectors: int
    model_family: str
    model_revision: str
    manifest_sha256: str
    score_scale: ScoreScale
    disk_bytes: int
    def __init__(self, items: _Optional[int] = ..., dims: _Optional[int] = ..., model_id: _Optional[str] = ..., random_weights: _Optional[bool] = ..., precision: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., preprocess_mode: _Optional[str] = ..., index: _Optional[_Union[IndexSettings, _Mapping]] = ..., queue_depth: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., batches: _Optional[int] = ..., mean_batch_size: _Optional[float] = ..., version: _Optional[str] = ..., text_enabled: _Optional[bool] = ..., text_precision: _Optional[str] = ..., text_queue_depth: _Optional[int] = ..., index_version: _Optional[str] = ..., shards: _Optional[_Iterable[_Union[ShardStats, _Mapping]]] = ..., vectors: _Optional[int] = ..., model_family: _Optional[str] = ..., model_revision: _Optional[str] = ..., manifest_sha256: _Optional[str] = ..., score_scale: _Optional[_Union[ScoreScale, _Mapping]] = ..., disk_bytes: _Optional[int] = ...) -> None: ...

class ScoreScale(_message.Message):
    __slots__ = ("kind", "scale", "bias")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    scale: float
    bias: float
    def __init__(self, kind: _Optional[str] = ..., scale: _Optional[float] = ..., bias: _Optional[float] = ...) -> None: ...

class ShardStats(_message.Message):
    __slots__ = ("number", "items", "vectors", "replicas")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    number: int
    items: int
    vectors: int
    replicas: int
    def __init__(self, number: _Optional[int] = ..., items: _Optional[int] = ..., vectors: _Optional[int] = ..., replicas: _Optional[int] = ...) -> None: ...
