"""Import-linter contract types the built-in ones cannot express.

``private_modules``: private modules stay private. A module is private when a part of its name below the root package starts with one underscore
(``mixer.quota._redis``, ``adapters.kafka._config``; ``__main__`` is not). Each module belongs to
a component: the one of ``components`` it is or lies inside (``adapters.*``: each adapter;
``mixer.*``: each package or module of mixer). A module may import the private modules of its own
component only; anything else goes through the component's public modules, which are what it
promises to keep.

``acyclic_modules``: no import cycle between any two modules, a package and its own modules
included (``acyclic_siblings`` compares siblings only, so ``mixer.cli`` importing
``mixer.cli._completion`` which imports ``mixer.cli`` passes it).

Configured in pyproject.toml (``[tool.importlinter]``) and run by ``make lint``.
"""

from __future__ import annotations

from dataclasses import dataclass

import grimp
from importlinter import Contract, ContractCheck, fields, output


@dataclass(frozen=True, slots=True, order=True)
class PrivateImport:
    importer: str
    imported: str
    line_numbers: tuple[int, ...]


def is_private(module: str) -> bool:
    """Whether a part of ``module`` below its root package starts with one underscore."""
    return any(part.startswith("_") and not part.startswith("__") for part in module.split(".")[1:])


def owner(module: str, components: frozenset[str]) -> str:
    """The component ``module`` belongs to: itself or its nearest ancestor among ``components``
    (a module in none is a component of its own)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in components:
            return candidate
    return module


def private_imports(
    graph: grimp.ImportGraph, importers: set[str], components: frozenset[str]
) -> list[PrivateImport]:
    """Every import by one of ``importers`` of another component's private module."""
    found = []
    for importer in importers:
        mine = owner(importer, components)
        for imported in graph.find_modules_directly_imported_by(importer):
            if not is_private(imported) or owner(imported, components) == mine:
                continue
            details = graph.get_import_details(importer=importer, imported=imported)
            lines = tuple(sorted({int(detail["line_number"]) for detail in details}))
            found.append(PrivateImport(importer, imported, lines))
    return sorted(found)


class PrivateModulesContract(Contract):
    """``importers`` (packages, with every module inside) import no other component's private
    module; ``components`` (module expressions, wildcards allowed) say what a component is."""

    type_name = "private_modules"

    importers = fields.ListField(subfield=fields.ModuleExpressionField())
    components = fields.ListField(subfield=fields.ModuleExpressionField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        components = frozenset(
            name
            for expression in self.components  # type: ignore[attr-defined]
            for name in _matching(graph, str(expression))
        )
        importers: set[str] = set()
        for expression in self.importers:  # type: ignore[attr-defined]
            for name in _matching(graph, str(expression)):
                importers.add(name)
                importers.update(graph.find_descendants(name))
        found = private_imports(graph, importers, components)
        return ContractCheck(kept=not found, metadata={"private_imports": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        found: list[PrivateImport] = check.metadata["private_imports"]
        output.print_error("Imports of another component's private modules:", bold=False)
        output.new_line()
        for item in found:
            lines = ", ".join(map(str, item.line_numbers))
            output.print_error(f"- {item.importer} -> {item.imported} (l.{lines})", bold=False)
        output.new_line()


class AcyclicModulesContract(Contract):
    """No module of ``packages`` (and their descendants) takes part in an import cycle."""

    type_name = "acyclic_modules"

    packages = fields.ListField(subfield=fields.ModuleExpressionField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        modules: set[str] = set()
        for expression in self.packages:  # type: ignore[attr-defined]
            for name in _matching(graph, str(expression)):
                modules.add(name)
                modules.update(graph.find_descendants(name))
        cycles = import_cycles(graph, modules)
        return ContractCheck(kept=not cycles, metadata={"cycles": cycles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        cycles: list[list[str]] = check.metadata["cycles"]
        for modules in cycles:
            output.print_error(f"Modules that import each other in a cycle ({len(modules)}):", bold=False)
            output.new_line()
            for module in modules:
                output.print_error(f"- {module}", bold=False)
            output.new_line()


def import_cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The groups of ``modules`` that import one another in a cycle (the strongly connected
    components of more than one module, or of one that imports itself), each sorted."""
    edges = {
        module: sorted(graph.find_modules_directly_imported_by(module) & modules)
        for module in sorted(modules)
    }
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        # Tarjan's algorithm without recursion: the graph is thousands of modules deep at most,
        # but Python's recursion limit is not a thing a lint run should depend on.
        work = [(root, 0)]
        while work:
            module, position = work.pop()
            if position == 0:
                index[module] = lowest[module] = len(index)
                stack.append(module)
                on_stack.add(module)
            targets = edges[module]
            if position < len(targets):
                work.append((module, position + 1))
                target = targets[position]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    lowest[module] = min(lowest[module], index[target])
                continue
            if lowest[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1 or module in targets:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                lowest[parent] = min(lowest[parent], lowest[module])
    return sorted(found)


def _matching(graph: grimp.ImportGraph, expression: str) -> set[str]:
    if "*" in expression:
        return set(graph.find_matching_modules(expression))
    return {expression} if expression in graph.modules else set()
