"""What the benchmarks share: the machine's name and the tables. (A cnnc network rebuilt in
PyTorch is cnnc.export.to_torch.)"""
import os
import platform


def cpu_name():
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def table(rows, columns, ratios, markdown, texts=()):
    """Times in ms per column (rows hold seconds), then each ratio (a, b) as time a / time b,
    then each text column as the rows hold it; "-" where a row has no such value."""
    header = (["case"] + [f"{c} ms" for c in columns] + [f"{a} / {b}" for a, b in ratios]
              + list(texts))
    lines = [header]
    for name, result in rows.items():
        times = [f"{1e3 * result[c]:.2f}" if c in result else "-" for c in columns]
        quotients = [f"{result[a] / result[b]:.2f}x" if a in result and b in result else "-"
                     for a, b in ratios]
        lines.append([name] + times + quotients + [str(result.get(t, "-")) for t in texts])
    if markdown:
        out = ["| " + " | ".join(line) + " |" for line in lines]
        out.insert(1, "|" + "---|" * len(header))
        return "\n".join(out)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines)
