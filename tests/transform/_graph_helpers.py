"""A helper shared by the fused-backend tests (test_fused_engine.py, test_fused_training.py).

Imported as ``from _graph_helpers import graph_nodes``: tests/ has no __init__.py, so pytest puts this
folder on sys.path before it imports a test module from it.
"""
import itnet_np as itn


def graph_nodes(y):
    """Every node of y's graph, each once, in the order of an iterative depth-first walk from y."""
    seen, stack = {}, [y.node]
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = node
            stack.extend(a.node for a in node.inputs if isinstance(a, itn.Tensor))
    return list(seen.values())
