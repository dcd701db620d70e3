"""User verbs: submit, q, history, rm, hold, release, qedit, wait, fetch."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pilotage.cli import condor_style, queue_view
from pilotage.cli.progress import BIG_CLUSTER, progress_bar
from pilotage.errors import BadInput, Transient

if TYPE_CHECKING:  # each command imports what it needs when it runs (a quick start)
    from rich.table import Table

    from pilotage.cli.client import Client

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Ids = Annotated[list[str], typer.Argument(help="Job ids: CLUSTER or CLUSTER.PROC.")]

Reason = Annotated[str | None, typer.Option(help="Why (kept in the job's history).")]
Words = Annotated[
    list[str] | None, typer.Argument(help="Job ids (CLUSTER or CLUSTER.PROC) and user names.")
]
Targets = Annotated[
    list[str] | None, typer.Argument(help="Job ids (CLUSTER or CLUSTER.PROC) or user names.")
]
Constraint = Annotated[
    str | None,
    typer.Option(
        "-constraint", "--constraint", help="Only jobs whose ad makes this expression true."
    ),
]
Autoformat = Annotated[
    bool,
    typer.Option(
        "-af", "-autoformat", "--af", help="Print the named attributes, one job per line."
    ),
]
Long = Annotated[bool, typer.Option("-l", "-long", "--long", help="Print whole job ads.")]

FINAL = ("COMPLETED", "REMOVED", "HELD")
#: The states each action applies to, for targets chosen by user name or constraint.
_ACTS_ON = {
    "remove": ("IDLE", "RUNNING", "HELD"),
    "hold": ("IDLE", "RUNNING"),
    "release": ("HELD",),
}


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def _ago(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%m/%d %H:%M", time.localtime(ts))


def jobs_table(jobs: list[dict[str, Any]], title: str) -> Table:
    """The readable view of ``history`` and ``wait``."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("ID", "OWNER", "SUBMITTED", "STATE", "EXIT", "SITE", "WALL", "COMMAND / REASON"):
        table.add_column(col, no_wrap=col != "COMMAND / REASON")
    for job in jobs:
        command = " ".join([Path(job["executable"]).name, *job["arguments"]])
        what = job["hold_reason"] if job["state"] == "HELD" else command
        exit_text = "" if job["exit_code"] is None else str(job["exit_code"])
        if job.get("exit_signal"):
            exit_text = f"sig {job['exit_signal']}"
        wall = "" if job["wall_s"] is None else f"{job['wall_s']:.1f}s"
        table.add_row(
            job["id"],
            job["owner"],
            _ago(job["qdate"]),
            job["state"],
            exit_text,
            job["site"] or "",
            wall,
            what or "",
        )
    return table


def _summary(jobs: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["state"]] = counts.get(job["state"], 0) + 1
    parts = [f"{n} {state.lower()}" for state, n in sorted(counts.items())]
    return f"{len(jobs)} jobs: " + (", ".join(parts) if parts else "none")


def register(app: typer.Typer) -> None:
    """Add the user verbs to the root command."""

    @app.command("submit")
    def submit_cmd(
        ctx: typer.Context,
        file: Annotated[Path, typer.Argument(help="The submit description file.")],
        as_json: Json = False,
    ) -> None:
        """Submit the jobs a submit description queues; print the cluster id."""
        from pilotage.cli.submitting import submit

        with ctx.obj.client() as client, progress_bar(min_total=BIG_CLUSTER) as report:
            me = client.call("GET", "/api/v1/whoami")["name"]
            cluster, count = submit(client, file, me, report)
        if as_json:
            _print_json({"cluster": cluster, "jobs": count})
        else:
            typer.echo(f"{count} job(s) submitted to cluster {cluster}.")

    def _show(
        ctx: typer.Context,
        words: list[str] | None,
        *,
        finished: bool,
        owner: str | None,
        constraint: str | None,
        af: bool,
        long: bool,
        nobatch: bool,
        as_json: bool,
        limit: int | None = None,
    ) -> None:
        ids, rest = condor_style.split_targets(words or [], names=not af)
        attrs, owners = (rest, []) if af else ([], rest)
        owners += [owner] if owner else []
        if not (finished or constraint or af or long):
            # The queue without ads: batches counted by the server, jobs paged or streamed.
            with ctx.obj.client() as client:
                if as_json:
                    queue_view.write_json(client, ids, owners)
                elif nobatch or ids:
                    queue_view.print_jobs(client, ids, owners)
                else:
                    queue_view.print_batches(client, owners)
            return
        from rich.console import Console

        with ctx.obj.client() as client:
            jobs = condor_style.fetch_ads(
                client,
                ids=ids,
                owners=owners,
                constraint=constraint,
                finished=finished,
                limit=limit,
            )
        if as_json:
            _print_json([{k: v for k, v in job.items() if k != "ad"} for job in jobs])
        elif af:
            text = condor_style.autoformat(jobs, attrs)
            if text:
                typer.echo(text)
        elif long:
            typer.echo(condor_style.long_form(jobs))
        else:
            console = Console()
            title = "History" if finished else "Queue"
            batched = not (nobatch or finished or ids)
            console.print(
                queue_view.batch_table(condor_style.group_batches(jobs), title)
                if batched
                else jobs_table(jobs, title)
            )
            console.print(_summary(jobs))

    @app.command("q")
    def q_cmd(
        ctx: typer.Context,
        words: Words = None,
        owner: Annotated[str | None, typer.Option(help="Only this owner's jobs.")] = None,
        constraint: Constraint = None,
        af: Autoformat = False,
        long: Long = False,
        nobatch: Annotated[
            bool, typer.Option("-nobatch", "--nobatch", help="One line per job, not per batch.")
        ] = False,
        analyze: Annotated[
            bool,
            typer.Option(
                "--analyze",
                "-analyze",
                "-better-analyze",
                help="Why one job does not run: each Requirements clause against the "
                "pool's slots, the slots that refuse it, its place in fair share; for a "
                "held job, why it is held and how to release it.",
            ),
        ] = False,
        as_json: Json = False,
    ) -> None:
        """Jobs in the queue (idle, running, held), grouped by batch (condor_q).

        WORDS are job ids (CLUSTER or CLUSTER.PROC) and user names; with -af, the words
        that are not job ids are the attributes to print.
        """
        if analyze:
            ids = condor_style.split_targets(words or [])[0]
            if len(ids) != 1 or len(words or []) != 1:
                raise BadInput("-analyze explains one job: name it as CLUSTER.PROC")
            with ctx.obj.client() as client:
                (job,) = client.call("GET", "/api/v1/jobs", params={"id": ids})[:1]
                if job["state"] == "HELD":
                    if as_json:
                        _print_json(
                            {
                                "job": job["id"],
                                "held": True,
                                "text": condor_style.held_explanation(job),
                            }
                        )
                    else:
                        typer.echo(condor_style.held_explanation(job))
                    return
                analysis = client.call("GET", f"/api/v1/jobs/{ids[0]}/analysis")
            if as_json:
                _print_json(analysis)
            else:
                typer.echo(analysis["text"])
            return
        _show(
            ctx,
            words,
            finished=False,
            owner=owner,
            constraint=constraint,
            af=af,
            long=long,
            nobatch=nobatch,
            as_json=as_json,
        )

    @app.command("history")
    def history_cmd(
        ctx: typer.Context,
        words: Words = None,
        owner: Annotated[str | None, typer.Option(help="Only this owner's jobs.")] = None,
        constraint: Constraint = None,
        limit: Annotated[
            int | None,
            typer.Option("-limit", "--limit", "-match", min=1, help="Only the N most recent jobs."),
        ] = None,
        af: Autoformat = False,
        long: Long = False,
        as_json: Json = False,
    ) -> None:
        """Jobs that have finished (completed or removed) (condor_history)."""
        _show(
            ctx,
            words,
            finished=True,
            owner=owner,
            constraint=constraint,
            af=af,
            long=long,
            nobatch=True,
            as_json=as_json,
            limit=limit,
        )

    def _act(
        ctx: typer.Context,
        action: str,
        words: list[str],
        constraint: str | None,
        reason: str | None,
        as_json: bool,
    ) -> None:
        if not words and not constraint:
            raise BadInput(
                "Missing argument: name jobs (CLUSTER or CLUSTER.PROC), user names, "
                "or -constraint EXPR"
            )
        ids, owners = condor_style.split_targets(words)
        with ctx.obj.client() as client:
            if owners or constraint:
                found = condor_style.fetch_ads(
                    client, ids=ids, owners=owners, constraint=constraint, finished=False
                )
                # As condor_release does, a selection takes the jobs the action applies to.
                ids = [job["id"] for job in found if job["state"] in _ACTS_ON[action]]
                if not ids:
                    raise BadInput(_nothing_matches(action, owners, constraint))
            if not ids:
                raise BadInput("name jobs (CLUSTER or CLUSTER.PROC), user names, or -constraint")
            results = client.call(
                "POST",
                "/api/v1/jobs/actions",
                json={"action": action, "ids": ids, "reason": reason},
            )
        if as_json:
            _print_json(results)
        else:
            for r in results:
                verb = {"remove": "removed", "hold": "held", "release": "released"}[action]
                line = (
                    f"job {r['job_id']} {verb}" if r["ok"] else f"job {r['job_id']}: {r['message']}"
                )
                typer.echo(line)
        if not all(r["ok"] for r in results):
            raise typer.Exit(6)

    @app.command("rm")
    def rm_cmd(
        ctx: typer.Context,
        targets: Targets = None,
        constraint: Constraint = None,
        reason: Reason = None,
        as_json: Json = False,
    ) -> None:
        """Remove jobs (a running job is stopped) (condor_rm)."""
        _act(ctx, "remove", targets or [], constraint, reason, as_json)

    @app.command("hold")
    def hold_cmd(
        ctx: typer.Context,
        targets: Targets = None,
        constraint: Constraint = None,
        reason: Reason = None,
        as_json: Json = False,
    ) -> None:
        """Hold jobs: they will not run until released (a running job is stopped)
        (condor_hold)."""
        _act(ctx, "hold", targets or [], constraint, reason, as_json)

    @app.command("release")
    def release_cmd(
        ctx: typer.Context,
        targets: Targets = None,
        constraint: Constraint = None,
        reason: Reason = None,
        as_json: Json = False,
    ) -> None:
        """Release held jobs back to the queue (condor_release)."""
        _act(ctx, "release", targets or [], constraint, reason, as_json)

    @app.command("qedit")
    def qedit_cmd(
        ctx: typer.Context,
        job: Annotated[str, typer.Argument(help="CLUSTER or CLUSTER.PROC (idle jobs only).")],
        attribute: Annotated[str, typer.Argument(help="The attribute, e.g. PeriodicRemove.")],
        value: Annotated[str, typer.Argument(help="A ClassAd expression; quote strings.")],
        as_json: Json = False,
    ) -> None:
        """Set one attribute of idle jobs (condor_qedit)."""
        with ctx.obj.client() as client:
            answer = client.call(
                "POST", f"/api/v1/jobs/{job}/attrs", json={"name": attribute, "value": value}
            )
        if as_json:
            _print_json(answer)
        else:
            for edited in answer["edited"]:
                typer.echo(f"job {edited}: {attribute} = {value}")

    @app.command("wait")
    def wait_cmd(
        ctx: typer.Context,
        ids: Ids,
        timeout: Annotated[
            float | None, typer.Option(help="Give up after this many seconds.")
        ] = None,
        fetch: Annotated[
            bool, typer.Option(help="Bring outputs back to the submit directory.")
        ] = True,
        as_json: Json = False,
    ) -> None:
        """Wait until the jobs are completed, removed or held; bring their outputs back.

        Exit 0 when every job completed with exit code 0, 1 otherwise, 75 on timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with ctx.obj.client() as client:
            with progress_bar() as report:
                while True:
                    jobs = client.call("GET", "/api/v1/jobs", params={"id": ids})
                    if not jobs:
                        raise BadInput(f"no jobs match {' '.join(ids)}")
                    done = sum(j["state"] in FINAL for j in jobs)
                    report(f"waiting: {_summary(jobs)}", done, len(jobs))
                    if done == len(jobs):
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        raise Transient(f"timed out waiting for {_summary(jobs)}")
                    time.sleep(1.0)
            if fetch:
                bring_back(client, jobs)
        if as_json:
            _print_json(jobs)
        else:
            from rich.console import Console

            Console().print(jobs_table(jobs, "Finished"))
        if not all(j["state"] == "COMPLETED" and j["exit_code"] == 0 for j in jobs):
            raise typer.Exit(1)

    @app.command("fetch")
    def fetch_cmd(ctx: typer.Context, ids: Ids) -> None:
        """Bring finished jobs' outputs (and log files) back to their submit directories."""
        with ctx.obj.client() as client:
            jobs = client.call("GET", "/api/v1/jobs", params={"id": ids})
            for job, placed in bring_back(client, jobs):
                typer.echo(f"job {job['id']}: {', '.join(placed) or 'no output files'}")
            me = client.call("GET", "/api/v1/whoami")["name"]
        if any(job["owner"] != me for job in jobs):
            raise typer.Exit(4)


def _nothing_matches(action: str, owners: list[str], constraint: str | None) -> str:
    """Why a selection by user name or constraint found no job to act on."""
    if constraint:
        return f"no job in the queue matches {constraint} (that the {action} applies to)"
    who = ", ".join(owners)
    return (
        f"no job in the queue that the {action} applies to belongs to {who}; if '{owners[0]}' "
        "was meant as a job: it is not a job id; use CLUSTER or CLUSTER.PROC"
    )


def bring_back(
    client: Client, jobs: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], list[str]]]:
    """Fetch the outputs of finished jobs and write their log files; only the caller's own
    jobs (another's are named on standard error and skipped)."""
    from pilotage.cli.submitting import fetch_outputs, write_user_log

    done = []
    logs: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = {}
    me = client.call("GET", "/api/v1/whoami")["name"]
    for job in jobs:
        if job["owner"] != me:
            # A job's iwd and log paths are its owner's words: writing them as anyone else
            # (root, an admin) would let the owner choose what that caller overwrites.
            typer.echo(
                f"pilotage: job {job['id']} belongs to {job['owner']}; only its owner can "
                "bring its outputs back",
                err=True,
            )
            continue
        if job["state"] == "COMPLETED":
            done.append((job, fetch_outputs(client, job)))
        if job.get("log"):
            events = client.call("GET", f"/api/v1/jobs/{job['id']}/events")
            logs.setdefault(job["log"], []).append((job, events))
    form = os.environ.get("PILOTAGE_USERLOG_FORMAT", "text").lower()
    if form not in ("text", "json"):
        raise BadInput(f"PILOTAGE_USERLOG_FORMAT is {form!r}: use text or json")
    for path, history in logs.items():
        write_user_log(Path(path), history, json_form=form == "json")
    return done
