"""Importing a shop's orders, customers and shipments (CSV files and SQL sources).

run.py       one file or SQL pull: bookkeeping, chunks, counts, rejects
reading.py   checksum + strict decoding pass, CSV records in chunks
mapping.py   column mappings (TOML; presets in mappings/)
validate.py  typed values and the reason for every refused one
store.py     staging table and upserts keyed by (shop, source id)
drop.py      the drop location the automail_import DAG scans
sql_source.py  incremental pulls from a shop's database
"""

from automail.imports.mapping import KINDS, Mapping, MappingError, load_mapping
from automail.imports.reading import FileError
from automail.imports.run import ImportResult, import_file

__all__ = [
    "KINDS",
    "FileError",
    "ImportResult",
    "Mapping",
    "MappingError",
    "import_file",
    "load_mapping",
]
