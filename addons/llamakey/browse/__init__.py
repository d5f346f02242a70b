"""``lmk audit browse``: the audit database in Datasette, read-only, on loopback, with canned
queries.

What it serves
    A snapshot, not the live file. Datasette's ``--immutable`` is what makes it read-only, and
    an immutable file must not change underneath SQLite: on a file the proxy is writing it
    could answer wrongly or fail as corrupt, and it would not see rows still in the ``-wal``
    file. So the database is copied with SQLite's online backup API from a read-only
    (``mode=ro``) connection, which includes the committed rows in the WAL, into a private
    (0700) temporary directory, and that copy is served ``--immutable``. It is removed when the
    command stops. Restart the command to see newer rows.

The metadata
    ``llamakey/audit/datasette.yaml`` (Datasette's metadata format) holds the titles and the
    canned queries. They are filed there under ``lmk_audit``, the default database's name; they
    are handed to Datasette under the name of the database actually served
    (:func:`metadata_for`).

Who can see it
    Datasette listens on a loopback address only, and behind the access-token gate of
    :mod:`llamakey.browse.gate`: the address printed carries a token that only this run knows.

Datasette is an optional dependency (``pip install 'llamakey[browse]'``); this module imports it
only in Datasette's own process.
"""

from typing import Final

__all__ = ["DEFAULT_DATABASE", "DEFAULT_PORT", "INSTALL_HINT"]

#: The name the shipped metadata files its queries under (audit.path = "lmk_audit.db").
DEFAULT_DATABASE: Final = "lmk_audit"
DEFAULT_PORT: Final = 8001  # Datasette's own default
INSTALL_HINT: Final = "pip install 'llamakey[browse]'"
