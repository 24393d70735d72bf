"""Live sync progress: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import logging
import threading

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from cloudlet.cmd.render import plural, print_plan
from cloudlet.engine.walk import NodeResult
from cloudlet.planner import Plan, Step

log = logging.getLogger("cloudlet.progress")


class RichProgress:
    """A live bar per round on a terminal (a ``SyncListener``)."""

    def __init__(self, console: Console, *, show_plan: bool = True) -> None:
        self.console = console
        self.show_plan = show_plan
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.running: set[str] = set()
        self.lock = threading.Lock()

    def plan_ready(self, plan: Plan, round_no: int) -> None:
        self.close()
        if self.show_plan and round_no == 1:
            print_plan(self.console, plan, limit=60)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.fields[now]}"),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task(
            f"round {round_no}", total=plan.graph.number_of_nodes(), now=""
        )
        self.progress.start()

    def _now(self) -> str:
        names = sorted(self.running)
        return ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")

    def step_started(self, step: Step) -> None:
        with self.lock:
            self.running.add(step.change.id)
            if self.progress is not None and self.task is not None:
                self.progress.update(self.task, now=self._now())

    def step_finished(self, step: Step, result: NodeResult) -> None:
        with self.lock:
            self.running.discard(step.change.id)
            if self.progress is not None and self.task is not None:
                self.progress.update(self.task, advance=1, now=self._now())
            if result.outcome == "failed":
                error = escape(str(result.error))
                self.console.print(
                    f"[red]✗ {step.phase} {step.change.id}: {error}[/]", highlight=False
                )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class PlainProgress:
    """One line per finished step, for logs and pipes (a ``SyncListener``)."""

    def __init__(self, console: Console, *, show_plan: bool = True) -> None:
        self.console = console
        self.show_plan = show_plan

    def plan_ready(self, plan: Plan, round_no: int) -> None:
        if self.show_plan and round_no == 1:
            print_plan(self.console, plan, limit=60)
        self.console.print(f"round {round_no}: {plural(plan.graph.number_of_nodes(), 'step')}")

    def step_started(self, step: Step) -> None:
        return None

    def step_finished(self, step: Step, result: NodeResult) -> None:
        took = (result.finished or 0) - (result.started or 0)
        verb = {"create": "created", "update": "updated", "delete": "deleted"}[step.phase]
        if result.outcome == "ok":
            self.console.print(f"  {verb} {step.change.id} ({took:.2f} s)", highlight=False)
        else:
            error = escape(str(result.error))
            self.console.print(
                f"  failed to {step.phase} {step.change.id}: {error}", highlight=False
            )

    def close(self) -> None:
        return None
