"""Roles, databases, extensions and grants: one catalog snapshot, one plan, one SQL script.

The same three functions serve a run and a drift check:

* :func:`snapshot_sql` — a psql script (stdin) that prints one ``tag<TAB>json`` line per part of the catalog the
  inputs are about: every role (attributes, memberships, what it owns), every database (owner, encoding, locale),
  and, per declared database that exists (``\\c`` inside the same psql run), its extensions and the privileges
  each grant asks for. One exec channel, whatever the number of databases.
* :func:`parse_snapshot` — that output as a :class:`Snapshot`.
* :func:`plan` — what differs (:class:`Change`, each with a one-line description and the SQL that fixes it) and
  what must be refused before anything is sent (an encoding change, a role that owns objects). A run sends the
  changes' SQL in one psql script; a check reports them as drift.

Privileges are read from the ACLs themselves (``aclexplode`` over the object's ACL or its default), so a grant
is "there" only when it was made explicitly, not because PUBLIC happens to have it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .inputs import Database, DbUser, Grant, PostgresInputs
from .roles import SESSION_PREAMBLE, scram_matches, scram_verifier, sql_ident, sql_literal

_TABLE_KINDS = "('r', 'p', 'v', 'm', 'f')"


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join(sql_literal(v) for v in values) + "]::text[]"


def _role_oid(name: str) -> str:
    return f"(SELECT oid FROM pg_roles WHERE rolname = {sql_literal(name)})"


def _missing(privs: list[str], acl_from: str, cond: str, role: str) -> str:
    """SQL: JSON array of the privileges in ``privs`` that ``role`` lacks in the ACL rows ``a`` of ``acl_from``."""
    return (f"(SELECT coalesce(json_agg(p), '[]') FROM unnest({_array(privs)}) p WHERE NOT EXISTS ("
            f"SELECT FROM {acl_from} WHERE {cond} AND a.grantee = {_role_oid(role)} AND a.privilege_type = p))")


def _grant_sql(i: int, g: Grant, owner: str) -> str:
    schema = sql_literal(g.schema_)
    parts = [f"'i', {i}", f"'schema_exists', EXISTS (SELECT FROM pg_namespace WHERE nspname = {schema})"]
    if g.schema_privileges:
        parts.append("'schema_missing', " + _missing(
            g.schema_privileges, "pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a",
            f"n.nspname = {schema}", g.role))
    if g.table_privileges:
        parts.append(
            "'tables_missing', (SELECT coalesce(json_object_agg(p, n), '{}') FROM (SELECT p, count(*) AS n "
            f"FROM unnest({_array(g.table_privileges)}) p, pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace "
            f"WHERE ns.nspname = {schema} AND c.relkind IN {_TABLE_KINDS} AND NOT EXISTS (SELECT FROM "
            "aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a "
            f"WHERE a.grantee = {_role_oid(g.role)} AND a.privilege_type = p) GROUP BY p) x)")
        if g.default_privileges:
            fors = [r for r in (g.default_for or [owner]) if r != g.role]
            items = ", ".join(
                f"{sql_literal(r)}, " + _missing(
                    g.table_privileges, "pg_default_acl d, aclexplode(d.defaclacl) a",
                    f"d.defaclrole = {_role_oid(r)} AND d.defaclnamespace = (SELECT oid FROM pg_namespace WHERE "
                    f"nspname = {schema}) AND d.defaclobjtype = 'r'", g.role)
                for r in fors)
            parts.append(f"'default_missing', json_build_object({items})")
    return "json_build_object(" + ", ".join(parts) + ")"


def snapshot_sql(inputs: PostgresInputs, *, stamp: bool = False) -> str:
    """The psql script (stdin, run as postgres) printing the catalog the inputs are about. ``stamp``: for the run
    stamp's probe, without what each role owns (counts that change whenever an application creates a table;
    :func:`plan` only reads them for a role declared absent, which then still exists and shows anyway)."""
    owns = ("" if stamp else
            ", 'owns', (SELECT coalesce(json_object_agg(coalesce(d.datname, ''), x.n), '{}') FROM (SELECT dbid, "
            "count(*) AS n FROM pg_shdepend WHERE refobjid = a.oid AND refclassid = 'pg_authid'::regclass "
            "AND deptype = 'o' GROUP BY dbid) x LEFT JOIN pg_database d ON d.oid = x.dbid), "
            "'acl_dbs', (SELECT coalesce(json_agg(DISTINCT d.datname), '[]') FROM pg_shdepend s JOIN pg_database d "
            "ON d.oid = s.dbid WHERE s.refobjid = a.oid AND s.refclassid = 'pg_authid'::regclass)")
    ext_names = sorted({e.name for d in inputs.databases for e in d.extensions})
    wanted_vu = [u for u in inputs.users if u.valid_until and u.state == "present"]
    out = ["\\pset fieldsep '\\t'\n", SESSION_PREAMBLE,
           "SELECT 'roles', coalesce(json_agg(json_build_object("
           "'name', a.rolname, 'superuser', a.rolsuper, 'login', a.rolcanlogin, 'createdb', a.rolcreatedb, "
           "'createrole', a.rolcreaterole, 'replication', a.rolreplication, 'bypassrls', a.rolbypassrls, "
           "'connection_limit', a.rolconnlimit, 'valid_until', a.rolvaliduntil, 'verifier', a.rolpassword, "
           "'member_of', (SELECT coalesce(json_agg(g.rolname ORDER BY g.rolname), '[]') FROM pg_auth_members m "
           "JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = a.oid)"
           + owns + ") ORDER BY a.rolname), '[]') FROM pg_authid a WHERE a.rolname !~ '^pg_';\n",
           "SELECT 'databases', coalesce(json_agg(json_build_object('name', datname, 'owner', "
           "pg_get_userbyid(datdba), 'encoding', pg_encoding_to_char(encoding), 'lc_collate', datcollate, "
           "'lc_ctype', datctype, 'privileges', (SELECT coalesce(json_object_agg(r.rolname, x.privs), '{}') FROM "
           "(SELECT a.grantee, json_agg(a.privilege_type ORDER BY a.privilege_type) AS privs FROM "
           "aclexplode(coalesce(datacl, acldefault('d', datdba))) a GROUP BY a.grantee) x "
           "JOIN pg_roles r ON r.oid = x.grantee)) ORDER BY datname), '[]') FROM pg_database "
           "WHERE datname <> 'template0';\n"]
    if ext_names:
        out.append("SELECT 'available', coalesce(json_object_agg(name, versions), '{}') FROM (SELECT name, "
                   "json_agg(version) AS versions FROM pg_available_extension_versions WHERE name IN ("
                   + ", ".join(sql_literal(n) for n in ext_names) + ") GROUP BY name) x;\n")
    if wanted_vu:
        out.append("SELECT 'valid_until', json_build_object("
                   + ", ".join(f"{sql_literal(u.name)}, {sql_literal(u.valid_until or '')}::timestamptz"
                               for u in wanted_vu) + ");\n")
    for d in inputs.databases:
        if d.state != "present":
            continue
        grants = [(i, g) for i, g in enumerate(inputs.grants) if g.database == d.name]
        if not d.extensions and not any(g.schema_privileges or g.table_privileges for _, g in grants):
            continue
        owner = inputs.owner_of(d)
        items = ", ".join(_grant_sql(i, g, owner) for i, g in grants if g.schema_privileges or g.table_privileges)
        out.append(f"SELECT EXISTS (SELECT FROM pg_database WHERE datname = {sql_literal(d.name)} AND datallowconn) "
                   "AS polyvm_db \\gset\n\\if :polyvm_db\n"
                   f"\\c {sql_ident(d.name)}\n" + SESSION_PREAMBLE
                   + f"SELECT 'db', json_build_object('name', {sql_literal(d.name)}, 'extensions', (SELECT "
                   "coalesce(json_object_agg(extname, extversion), '{}') FROM pg_extension), 'grants', "
                   f"json_build_array({items}));\n\\endif\n")
    return "".join(out)


@dataclass
class Snapshot:
    """The parsed catalog: roles and databases by name; per existing declared database its extensions and
    grant state (by grant index)."""

    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    databases: dict[str, dict[str, Any]] = field(default_factory=dict)
    available: dict[str, list[str]] = field(default_factory=dict)
    valid_until: dict[str, str] = field(default_factory=dict)
    db_state: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse_snapshot(stdout: str) -> Snapshot:
    snap = Snapshot()
    for line in stdout.splitlines():
        tag, _, data = line.partition("\t")
        if not data:
            continue
        value = json.loads(data)
        if tag == "roles":
            snap.roles = {r["name"]: r for r in value}
        elif tag == "databases":
            snap.databases = {d["name"]: d for d in value}
        elif tag == "available":
            snap.available = value
        elif tag == "valid_until":
            snap.valid_until = value
        elif tag == "db":
            snap.db_state[value["name"]] = value
    return snap


@dataclass(frozen=True)
class Change:
    """One difference between the server and the inputs: ``kind`` (role, database, extension, grant), ``what``
    (a line a person reads) and the SQL that fixes it (``database``: where it runs; None: anywhere)."""

    kind: str
    what: str
    sql: str = ""
    database: str | None = None
    phase: int = 0  # 0 roles and databases, 1 inside databases, 2 drops of roles


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    #: Differences polyvm reports but does not fix (an undeclared superuser).
    notices: list[Change] = field(default_factory=list)


def _role_options(u: DbUser) -> str:
    opts = ["LOGIN" if u.login else "NOLOGIN"]
    for attr in ("createdb", "createrole", "replication"):
        opts.append(attr.upper() if getattr(u, attr) else "NO" + attr.upper())
    opts.append(f"CONNECTION LIMIT {int(u.connection_limit)}")
    opts.append(f"VALID UNTIL {sql_literal(u.valid_until or 'infinity')}")
    return " ".join(opts)


def _role_attr_diffs(u: DbUser, have: dict[str, Any], snap: Snapshot) -> list[str]:
    diffs = []
    if have["superuser"]:
        diffs.append("is a superuser")
    for attr in ("login", "createdb", "createrole", "replication"):
        if bool(have[attr]) != getattr(u, attr):
            diffs.append(f"{attr} is {str(have[attr]).lower()}, want {str(getattr(u, attr)).lower()}")
    if have.get("bypassrls"):
        diffs.append("has bypassrls")
    if int(have["connection_limit"]) != u.connection_limit:
        diffs.append(f"connection limit is {have['connection_limit']}, want {u.connection_limit}")
    def norm(v: Any) -> str | None:
        return None if v in (None, "", "infinity") else str(v)

    want_vu = norm(snap.valid_until.get(u.name)) if u.valid_until else None
    if norm(have["valid_until"]) != want_vu:
        diffs.append(f"valid until {norm(have['valid_until']) or 'forever'}, want {u.valid_until or 'forever'}")
    return diffs


def plan(inputs: PostgresInputs, snap: Snapshot | None, *, plaintext: bool = False, check: bool = False) -> Plan:
    """What to change so the server matches ``inputs``. ``snap`` None: the server is unknown (Pulumi declares
    the SQL ahead of time): every statement, each guarded or idempotent. ``plaintext``: passwords as themselves
    (hashed by the server) instead of SCRAM verifiers. ``check``: only compare (a password not known here is
    not compared)."""
    p = Plan()
    known = snap is not None
    s = snap or Snapshot()
    managed = {u.name for u in inputs.users}

    # --- roles ------------------------------------------------------------------------------------------
    for u in inputs.users:
        if u.state == "absent":
            continue
        have = s.roles.get(u.name)
        opts = _role_options(u)
        if not known or have is None:
            p.changes.append(Change("role", f"role {u.name}: missing",
                                    f"SELECT format('CREATE ROLE %I', {sql_literal(u.name)}) WHERE NOT EXISTS "
                                    f"(SELECT FROM pg_roles WHERE rolname = {sql_literal(u.name)})\\gexec\n"
                                    f"ALTER ROLE {sql_ident(u.name)} NOSUPERUSER NOBYPASSRLS {opts};\n"))
        else:
            diffs = _role_attr_diffs(u, have, s)
            if diffs:
                p.changes.append(Change("role", f"role {u.name}: " + "; ".join(diffs),
                                        f"ALTER ROLE {sql_ident(u.name)} NOSUPERUSER NOBYPASSRLS {opts};\n"))
        if u.wants_password and not (check and u.password is None):
            assert u.password is not None, f"user {u.name} has no password (generate one first)"
            pw = u.password.get_secret_value()
            if not known or have is None or not scram_matches(have.get("verifier"), pw):
                secret = pw if plaintext else scram_verifier(pw)
                what = f"role {u.name}: password differs" if have is not None else f"role {u.name}: set password"
                p.changes.append(Change("password", what,
                                        f"ALTER ROLE {sql_ident(u.name)} PASSWORD {sql_literal(secret)};\n"))
        have_members = set(have["member_of"]) if have else set()
        for g in u.member_of:
            if not known or g not in have_members:
                p.changes.append(Change("membership", f"role {u.name}: not a member of {g}",
                                        f"GRANT {sql_ident(g)} TO {sql_ident(u.name)};\n"))
        for g in sorted(have_members - set(u.member_of)):
            p.changes.append(Change("membership", f"role {u.name}: member of {g}, not declared",
                                    f"REVOKE {sql_ident(g)} FROM {sql_ident(u.name)};\n"))
    if known:
        for name, have in sorted(s.roles.items()):
            if name == "postgres" or name in managed:
                continue
            if have["superuser"]:
                p.notices.append(Change("role", f"role {name}: a superuser polyvm does not declare"))
            elif have["login"]:
                p.notices.append(Change("role", f"role {name}: a login role polyvm does not declare"))

    # --- databases --------------------------------------------------------------------------------------
    for d in inputs.databases:
        have_db = s.databases.get(d.name)
        if d.state == "absent":
            if not known:
                p.changes.append(Change("database", f"database {d.name}: dropped",
                                        f"DROP DATABASE IF EXISTS {sql_ident(d.name)};\n", phase=2))
            elif have_db is not None:
                p.changes.append(Change("database", f"database {d.name}: exists, declared absent",
                                        f"DROP DATABASE {sql_ident(d.name)};\n", phase=2))
            continue
        owner = inputs.owner_of(d)
        if not known or have_db is None:
            opts = " OWNER %I"
            args = [sql_literal(d.name), sql_literal(owner)]
            for key, sqlkw in (("encoding", "ENCODING"), ("lc_collate", "LC_COLLATE"), ("lc_ctype", "LC_CTYPE")):
                if getattr(d, key):
                    opts += f" {sqlkw} %L"
                    args.append(sql_literal(getattr(d, key)))
            if d.effective_template:
                opts += " TEMPLATE %I"
                args.append(sql_literal(d.effective_template))
            p.changes.append(Change("database", f"database {d.name}: missing",
                                    f"SELECT format('CREATE DATABASE %I{opts}', {', '.join(args)}) WHERE NOT EXISTS "
                                    f"(SELECT FROM pg_database WHERE datname = {sql_literal(d.name)})\\gexec\n"))
        if have_db is not None:
            for key in ("encoding", "lc_collate", "lc_ctype"):
                want = getattr(d, key)
                if want and _norm_locale(have_db[key]) != _norm_locale(want):
                    p.refusals.append(f"database {d.name}: {key} is {have_db[key]}, not {want}; PostgreSQL cannot "
                                      "change it on an existing database (dump it and restore into a new one)")
        if not known or (have_db is not None and have_db["owner"] != owner):
            what = f"database {d.name}: owner is {have_db['owner']}, want {owner}" if have_db else \
                f"database {d.name}: owner {owner}"
            p.changes.append(Change("owner", what,
                                    f"SELECT format('ALTER DATABASE %I OWNER TO %I', {sql_literal(d.name)}, "
                                    f"{sql_literal(owner)}) FROM pg_database WHERE datname = {sql_literal(d.name)} "
                                    f"AND pg_get_userbyid(datdba) <> {sql_literal(owner)}\\gexec\n"))
        db_state = s.db_state.get(d.name) if known else None
        for e in d.extensions:
            versions = s.available.get(e.name)
            if known and versions is None:
                p.refusals.append(f"database {d.name}: extension {e.name} is not available on this server "
                                  "(pg_available_extensions; install the OS package that ships it)")
                continue
            if known and e.version and e.version not in versions:
                p.refusals.append(f"database {d.name}: extension {e.name} {e.version} is not available "
                                  f"(available: {', '.join(sorted(versions or []))})")
                continue
            have_v = (db_state or {}).get("extensions", {}).get(e.name)
            ver = f" VERSION {sql_literal(e.version)}" if e.version else ""
            if not known or have_v is None:
                p.changes.append(Change("extension", f"database {d.name}: extension {e.name} missing",
                                        f"CREATE EXTENSION IF NOT EXISTS {sql_ident(e.name)}{ver};\n"
                                        + (f"ALTER EXTENSION {sql_ident(e.name)} UPDATE TO {sql_literal(e.version)};\n"
                                           if e.version and not known else ""),
                                        database=d.name, phase=1))
            elif e.version and have_v != e.version:
                p.changes.append(Change("extension", f"database {d.name}: extension {e.name} is {have_v}, "
                                        f"want {e.version}",
                                        f"ALTER EXTENSION {sql_ident(e.name)} UPDATE TO {sql_literal(e.version)};\n",
                                        database=d.name, phase=1))

    # --- grants -----------------------------------------------------------------------------------------
    for i, g in enumerate(inputs.grants):
        d = next(x for x in inputs.databases if x.name == g.database)
        owner = inputs.owner_of(d)
        have_db = s.databases.get(g.database)
        if g.database_privileges:
            have_privs = set((have_db or {}).get("privileges", {}).get(g.role, []))
            missing = [x for x in g.database_privileges if x not in have_privs]
            if not known or missing:
                p.changes.append(Change("grant", f"database {g.database}: {g.role} lacks {', '.join(missing)}",
                                        f"GRANT {', '.join(missing or g.database_privileges)} ON DATABASE "
                                        f"{sql_ident(g.database)} TO {sql_ident(g.role)};\n"))
        st = next((x for x in (s.db_state.get(g.database) or {}).get("grants", []) if x["i"] == i), None)
        schema = sql_ident(g.schema_)
        if known and st is not None and not st["schema_exists"]:
            p.refusals.append(f"grants[{i}]: schema {g.schema_} does not exist in database {g.database}")
            continue
        if g.schema_privileges:
            missing = st["schema_missing"] if st else g.schema_privileges
            if missing:
                p.changes.append(Change("grant", f"database {g.database}: {g.role} lacks {', '.join(missing)} on "
                                        f"schema {g.schema_}",
                                        f"GRANT {', '.join(missing)} ON SCHEMA {schema} TO {sql_ident(g.role)};\n",
                                        database=g.database, phase=1))
        if g.table_privileges:
            missing_t = st["tables_missing"] if st else {x: None for x in g.table_privileges}
            if missing_t:
                counts = ", ".join(f"{k}" + (f" on {n} table(s)" if n else "") for k, n in missing_t.items())
                p.changes.append(Change("grant", f"database {g.database}: {g.role} lacks {counts} in schema "
                                        f"{g.schema_}",
                                        f"GRANT {', '.join(missing_t)} ON ALL TABLES IN SCHEMA {schema} TO "
                                        f"{sql_ident(g.role)};\n", database=g.database, phase=1))
            if g.default_privileges:
                fors = [r for r in (g.default_for or [owner]) if r != g.role]
                for r in fors:
                    missing = (st or {}).get("default_missing", {}).get(r, g.table_privileges) if st else \
                        g.table_privileges
                    if missing:
                        p.changes.append(Change(
                            "grant", f"database {g.database}: {g.role} lacks default {', '.join(missing)} on "
                            f"tables {r} creates in schema {g.schema_}",
                            f"ALTER DEFAULT PRIVILEGES FOR ROLE {sql_ident(r)} IN SCHEMA {schema} GRANT "
                            f"{', '.join(missing)} ON TABLES TO {sql_ident(g.role)};\n",
                            database=g.database, phase=1))

    # --- roles to drop ----------------------------------------------------------------------------------
    present_dbs = {d.name for d in inputs.databases if d.state == "present"}
    for u in inputs.users:
        if u.state != "absent":
            continue
        have = s.roles.get(u.name)
        if known and have is None:
            continue
        owned_dbs = sorted(n for n, db in s.databases.items() if db["owner"] == u.name)
        owns = {k: v for k, v in (have or {}).get("owns", {}).items() if k}
        if known and (owns or owned_dbs) and not u.reassign_owned_to:
            what = [f"{n} object(s) in database {k}" for k, n in sorted(owns.items())]
            what += [f"database {n}" for n in owned_dbs]
            p.refusals.append(f"role {u.name} (state: absent) owns {', '.join(what)}; give reassign_owned_to: "
                              "<role> or drop them first")
            continue
        if not known and not u.reassign_owned_to:
            # Declared ahead of time: the server refuses itself to drop a role that owns anything.
            p.changes.append(Change("role", "", (
                "DO $polyvm$ BEGIN IF EXISTS (SELECT FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass "
                f"AND deptype = 'o' AND refobjid = {_role_oid(u.name)}) THEN RAISE EXCEPTION "
                f"'role {u.name} (state: absent) owns objects; give reassign_owned_to or drop them first'; "
                "END IF; END $polyvm$;\n"), phase=0))
        dropped = {d.name for d in inputs.databases if d.state == "absent"}
        dbs = sorted((set(owns) | set((have or {}).get("acl_dbs", [])) | {"postgres"}) - dropped) if known else \
            sorted(present_dbs | {"postgres"})
        guard = f"SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = {sql_literal(u.name)}) AS polyvm_role \\gset\n"
        for db in dbs:
            body = ""
            if u.reassign_owned_to:
                body += f"REASSIGN OWNED BY {sql_ident(u.name)} TO {sql_ident(u.reassign_owned_to)};\n"
            body += f"DROP OWNED BY {sql_ident(u.name)};\n"
            if not known:
                body = guard + "\\if :polyvm_role\n" + body + "\\endif\n"
            p.changes.append(Change("role", f"role {u.name}: exists, declared absent" if db == dbs[-1] else "",
                                    body, database=db, phase=3))
        p.changes.append(Change("role", "", f"DROP ROLE IF EXISTS {sql_ident(u.name)};\n", phase=4))
    return p


def _norm_locale(v: str | None) -> str:
    return (v or "").lower().replace("-", "").replace("utf8", "utf8")


def plan_sql(p: Plan) -> str:
    """One psql script applying every change of the plan, in order: roles and databases, then inside each
    database, then role drops; ``\\c`` between databases (re-applying the session settings each time)."""
    out = [SESSION_PREAMBLE]
    current = "postgres"
    for phase in sorted({c.phase for c in p.changes}):
        for c in sorted((c for c in p.changes if c.phase == phase), key=lambda c: (c.database or "") if phase in (1, 3)
                        else ""):
            db = c.database or ("postgres" if phase != 1 else current)
            if db != current:
                out.append(f"\\c {sql_ident(db)}\n" + SESSION_PREAMBLE)
                current = db
            out.append(c.sql)
        if phase == 3 and current != "postgres":
            out.append("\\c postgres\n" + SESSION_PREAMBLE)
            current = "postgres"
    return "".join(out)


def change_lines(p: Plan) -> list[str]:
    return [c.what for c in p.changes if c.what]
