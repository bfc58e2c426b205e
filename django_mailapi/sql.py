"""Bulk statements the ORM cannot write in one round trip, for the worker's hot path.

PostgreSQL and SQLite (3.35 and later) take ``UPDATE … RETURNING`` and ``UPDATE … FROM``
a list of (key, value) rows; on any other database the same results come from the ORM
in two statements. Values go through each field's own ``get_db_prep_save``, so
they are adapted exactly as ``QuerySet.update()`` would adapt them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import (
    BigIntegerField,
    CharField,
    DateTimeField,
    Field,
    IntegerField,
    Model,
    PositiveIntegerField,
    PositiveSmallIntegerField,
    SmallIntegerField,
    TextField,
)

#: Emails per statement: well under SQLite's limit of 32,766 parameters.
CHUNK = 500


def native(model: type[Model]) -> bool:
    """Whether this model's database takes the statements below in one round trip."""
    return _native(router.db_for_write(model))


def _native(using: str) -> bool:
    connection = connections[using]
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        # UPDATE … FROM arrived in SQLite 3.33, RETURNING in 3.35.
        return bool(connection.features.can_return_columns_from_insert)
    return False


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    if not isinstance(field, Field):  # pragma: no cover - a relation's reverse side
        raise TypeError(f"{model.__name__}.{name} is not a concrete field")
    return field


def _pk(model: type[Model]) -> Field[Any, Any]:
    pk = model._meta.pk
    assert pk is not None
    return pk


#: Field classes whose get_db_prep_save returns a value of this exact type unchanged.
_UNCHANGED: dict[type[Field[Any, Any]], type] = {
    CharField: str,
    TextField: str,
    IntegerField: int,
    SmallIntegerField: int,
    BigIntegerField: int,
    PositiveIntegerField: int,
    PositiveSmallIntegerField: int,
}


def _saver(field: Field[Any, Any], connection: Any) -> Callable[[Any], Any]:
    """``field.get_db_prep_save`` for ``connection``, skipped where it would change nothing.

    A plain ``str`` for a CharField or an ``int`` for an IntegerField (the exact classes,
    not subclasses) goes to the driver as it is, like ``None``; so, on PostgreSQL with
    USE_TZ, does an aware ``datetime`` (or ``None``) for a DateTimeField, which Django
    passes through unchanged there. Anything else takes the field's own path. Writing
    thousands of values, the skipped calls are most of the cost.
    """
    prep = field.get_db_prep_save
    if type(field) is DateTimeField and connection.vendor == "postgresql" and settings.USE_TZ:

        def save_datetime(value: Any) -> Any:
            if value is None or (type(value) is dt.datetime and value.utcoffset() is not None):
                return value
            return prep(value, connection)  # naive: Django warns and makes it aware

        return save_datetime
    kind = _UNCHANGED.get(type(field))
    if kind is None:
        return lambda value: prep(value, connection)

    def save(value: Any) -> Any:
        if value is None or type(value) is kind:
            return value
        return prep(value, connection)

    return save


def _assignments(
    model: type[Model], values: Mapping[str, Any], using: str
) -> tuple[list[str], list[Any]]:
    """``"column" = %s`` for each field in ``values``, and the adapted parameters."""
    connection = connections[using]
    quote = connection.ops.quote_name
    sets, params = [], []
    for name, value in values.items():
        field = _field(model, name)
        sets.append(f"{quote(str(field.column))} = %s")
        params.append(field.get_db_prep_save(value, connection))
    return sets, params


def prep(model: type[Model], field: str, value: Any) -> Any:
    """``value`` adapted for ``field``'s column, for a parameter of raw SQL."""
    connection = connections[router.db_for_write(model)]
    return _field(model, field).get_db_prep_save(value, connection)


def update_returning(
    model: type[Model],
    pks: Sequence[int],
    where: str,
    where_params: Sequence[Any],
    values: Mapping[str, Any],
    increment: str = "",
) -> list[Any]:
    """``UPDATE model SET values WHERE pk IN pks AND (where) RETURNING *``, as instances.

    Only where ``native()`` is true. ``where`` is raw SQL on the model's own columns;
    ``increment`` names one integer field to add 1 to. Returns the rows the statement
    changed, ordered by primary key.
    """
    using = router.db_for_write(model)
    if not _native(using):
        raise NotImplementedError(f"UPDATE … RETURNING on {connections[using].vendor}")
    quote = connections[using].ops.quote_name
    table = quote(model._meta.db_table)
    pk_column = quote(str(_pk(model).column))
    sets, params = _assignments(model, values, using)
    if increment:
        column = quote(str(_field(model, increment).column))
        sets.append(f"{column} = {column} + 1")
    manager = model._default_manager.db_manager(using)
    rows: list[Any] = []
    postgresql = connections[using].vendor == "postgresql"
    for start in range(0, len(pks), CHUNK):
        chunk = list(pks[start : start + CHUNK])
        # One array parameter on PostgreSQL: a shorter statement to build and parse.
        marks = "= ANY(%s)" if postgresql else f"IN ({', '.join(['%s'] * len(chunk))})"
        keys: list[Any] = [chunk] if postgresql else chunk
        # Quoted names and placeholders only: every value is a parameter.
        sql = (
            f"UPDATE {table} SET {', '.join(sets)}"  # noqa: S608
            f" WHERE {pk_column} {marks} AND ({where}) RETURNING *"
        )
        rows.extend(manager.raw(sql, [*params, *keys, *where_params]))
    rows.sort(key=lambda row: row.pk)
    return rows


def update_each(
    model: type[Model],
    fields: Sequence[str],
    per_row: Mapping[int, Sequence[Any]],
    shared: Mapping[str, Any],
    fence: Mapping[str, Any] | None = None,
) -> list[int]:
    """Set ``fields`` to each row's own values (``per_row``: pk -> one value per field),
    and the ``shared`` values on all of them, in one statement per CHUNK rows.

    ``fence``: field -> value conditions a row must still meet to be changed (say, the
    writer's lease token); rows that no longer meet them are left as they are. Returns
    the primary keys of the rows changed, so the caller acts on those alone.
    Elsewhere than PostgreSQL and SQLite: the rows are locked with SELECT … FOR UPDATE
    in a transaction, then one UPDATE for ``shared`` and a ``bulk_update`` for ``fields``.
    """
    if not per_row:
        return []
    fence = dict(fence or {})
    using = router.db_for_write(model)
    manager = model._default_manager.db_manager(using)
    if not _native(using):  # pragma: no cover - MySQL/MariaDB: make test-mysql, unmeasured
        with transaction.atomic(using=using):
            # By key, like the claim: an ORDER BY on another column (the model's ordering)
            # lets MySQL read the rows through that column's index, locking, and waiting
            # for, every row it passes on the way, which deadlocks with a concurrent claim.
            held = list(
                manager.select_for_update()
                .filter(pk__in=list(per_row), **fence)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            if shared:
                manager.filter(pk__in=held).update(**shared)
            if fields:
                objs = manager.in_bulk(held)
                for pk, obj in objs.items():
                    for name, value in zip(fields, per_row[pk], strict=True):
                        setattr(obj, name, value)
                manager.bulk_update(list(objs.values()), list(fields))
        return held
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    pk_column = quote(str(_pk(model).column))
    targets = [_field(model, name) for name in fields]
    sets, params = _assignments(model, shared, using)
    conditions, condition_params = [], []
    for name, value in fence.items():
        field = _field(model, name)
        conditions.append(f" AND {table}.{quote(str(field.column))} = %s")
        condition_params.append(field.get_db_prep_save(value, connection))
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        # One array parameter per column, unnested into rows: (key, value, value, ...).
        types = [_pk(model).db_type(connection) or "bigint"]
        types += [target.db_type(connection) or "text" for target in targets]
        arrays = ", ".join(f"%s::{kind.split('(')[0]}[]" for kind in types)
        names = ", ".join(f"c{i}" for i in range(len(types)))
        source = f"unnest({arrays}) AS v({names})"
        columns = [f"v.c{i}" for i in range(len(types))]
    else:  # SQLite names a VALUES list's columns column1, column2, ...
        columns = [f"v.column{i + 1}" for i in range(len(targets) + 1)]
    sets += [
        f"{quote(str(target.column))} = {column}"
        for target, column in zip(targets, columns[1:], strict=True)
    ]
    savers = [_saver(target, connection) for target in targets]
    changed: list[int] = []
    items = list(per_row.items())
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        rows = [
            [pk, *(save(v) for save, v in zip(savers, values, strict=True))] for pk, values in chunk
        ]
        values: list[Any]
        if postgresql:
            values = [list(column) for column in zip(*rows, strict=True)]
        else:
            marks = "(" + ", ".join(["%s"] * len(columns)) + ")"
            source = f"(VALUES {', '.join([marks] * len(rows))}) AS v"
            values = [value for row in rows for value in row]
        # Quoted names and placeholders only: every value is a parameter.
        sql = (
            f"UPDATE {table} SET {', '.join(sets)} FROM {source}"  # noqa: S608
            f" WHERE {table}.{pk_column} = {columns[0]}{''.join(conditions)}"
            f" RETURNING {table}.{pk_column}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, *values, *condition_params])
            changed.extend(row[0] for row in cursor.fetchall())
    return changed


def update_fenced(
    model: type[Model], pks: Sequence[int], values: Mapping[str, Any], fence: Mapping[str, Any]
) -> list[int]:
    """Set ``values`` on those of ``pks`` that still meet ``fence``; returns their keys."""
    return update_each(model, [], {pk: () for pk in pks}, values, fence)


def insert(model: type[Model], objs: Sequence[Any], *, key: str) -> None:
    """Insert ``objs`` and set their primary keys, like ``bulk_create``, only faster.

    On PostgreSQL with psycopg 3: the keys are drawn from the table's sequence in one
    statement and the rows go in with ``COPY``, which skips building (and PostgreSQL
    parsing) a statement with a parameter per value. Elsewhere: ``bulk_insert``, which
    reads the keys back by ``key`` (a unique field) where the database does not return them.
    """
    if not objs:
        return
    using = router.db_for_write(model)
    connection = connections[using]
    connection.ensure_connection()
    if connection.vendor != "postgresql" or not hasattr(connection.connection, "cursor"):
        # MySQL, MariaDB, SQLite: make test-mysql runs this, but not under coverage.
        bulk_insert(model, objs, key=key, using=using)  # pragma: no cover
        return
    quote = connection.ops.quote_name
    pk = _pk(model)
    fields = [f for f in model._meta.concrete_fields if f is not pk]
    columns = ", ".join(quote(str(f.column)) for f in [pk, *fields])
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the driver's own cursor, under Django's wrapper
        if not hasattr(raw, "copy"):  # psycopg2
            bulk_insert(model, objs, key=key, using=using)
            return
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [model._meta.db_table, pk.column, len(objs)],
        )
        keys = [row[0] for row in cursor.fetchall()]
        savers = [(f.pre_save, _saver(f, connection)) for f in fields]
        with raw.copy(f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN") as copy:
            for key, obj in zip(keys, objs, strict=True):
                copy.write_row([key, *(save(pre_save(obj, True)) for pre_save, save in savers)])
    for key, obj in zip(keys, objs, strict=True):
        setattr(obj, pk.attname, key)
        obj._state.adding = False
        obj._state.db = using


def _copies(connection: Any) -> bool:
    """Whether this PostgreSQL connection's driver has ``COPY … FROM STDIN`` (psycopg 3)."""
    try:
        import psycopg
    except ImportError:  # psycopg2
        return False
    return isinstance(connection.connection, psycopg.Connection)


def insert_rows(
    model: type[Model], names: Sequence[str], rows: Sequence[Sequence[Any]], *, key: str
) -> list[int]:
    """Insert rows given as the values of the fields ``names`` (every other field takes
    its default) and return their primary keys, in order.

    On PostgreSQL with psycopg 3 the values go straight into ``COPY``: no model instance
    is built, and a field's default is computed and adapted once per call, not once per
    row (what ``insert`` spends most of its time on). Elsewhere: instances, ``insert``.
    """
    if not rows:
        return []
    pk = _pk(model)
    fields = [f for f in model._meta.concrete_fields if f is not pk]
    unknown = set(names) - {f.attname for f in fields}
    if unknown:  # a name that matched no field would be dropped without a word
        raise ValueError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    using = router.db_for_write(model)
    connection = connections[using]
    connection.ensure_connection()
    if connection.vendor != "postgresql" or not _copies(connection):
        # MySQL, MariaDB, SQLite, psycopg2: make test-mysql runs this, not under coverage.
        objs = [model(**dict(zip(names, row, strict=True))) for row in rows]
        insert(model, objs, key=key)
        return [obj.pk for obj in objs]
    quote = connection.ops.quote_name
    position = {name: index for index, name in enumerate(names)}
    # Per column: (index in a row, how to adapt it) or (None, the adapted default).
    plan: list[tuple[int | None, Any]] = []
    for field in fields:
        save = _saver(field, connection)
        index = position.get(field.attname)
        plan.append((index, save) if index is not None else (None, save(field.get_default())))
    columns = ", ".join(quote(str(f.column)) for f in [pk, *fields])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [model._meta.db_table, pk.column, len(rows)],
        )
        keys = [found[0] for found in cursor.fetchall()]
        with cursor.cursor.copy(
            f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN"
        ) as copy:
            for pk_value, row in zip(keys, rows, strict=True):
                copy.write_row(
                    [pk_value, *(how if at is None else how(row[at]) for at, how in plan)]
                )
    return keys


def bulk_insert(model: type[Model], objs: Sequence[Any], *, key: str, using: str) -> None:
    """``bulk_create`` that leaves every object with its primary key, on every database.

    PostgreSQL, SQLite 3.35+ and MariaDB 10.5+ return the keys of a multi-row INSERT;
    MySQL does not, and ``bulk_create`` leaves those objects with no ``pk``, still marked
    as unsaved. The rows are then read back (inside the caller's transaction, which sees
    them) by ``key``: a field unique in the table whose value each object already carries.
    """
    if not objs:
        return
    manager = model._default_manager.db_manager(using)
    manager.bulk_create(objs)
    missing = [obj for obj in objs if obj.pk is None]
    attname = _pk(model).attname
    for start in range(0, len(missing), CHUNK):
        wanted = {getattr(obj, key): obj for obj in missing[start : start + CHUNK]}
        found = dict(manager.filter(**{f"{key}__in": list(wanted)}).values_list(key, attname))
        for value, obj in wanted.items():
            setattr(obj, attname, found[value])
            obj._state.adding = False
            obj._state.db = using
