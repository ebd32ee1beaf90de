/// Per-group counts and the text report.
public struct Report: Sendable {
    public struct Row: Sendable {
        public var group: Group
        public var ok = 0, failed = 0, skipped = 0
        public var seconds = 0.0
        public var total: Int { ok + failed + skipped }
    }

    public var results: [CaseResult]

    public init(_ results: [CaseResult]) { self.results = results }

    public var rows: [Row] {
        Group.allCases.compactMap { g in
            let mine = results.filter { $0.testCase.group == g }
            guard !mine.isEmpty else { return nil }
            var row = Row(group: g)
            for r in mine {
                switch r.verdict {
                case .ok: row.ok += 1
                case .failed: row.failed += 1
                case .skipped: row.skipped += 1
                }
                row.seconds += r.seconds
            }
            return row
        }
    }

    public var failed: [CaseResult] { results.filter { if case .failed = $0.verdict { return true }; return false } }
    public var skipped: [CaseResult] { results.filter { if case .skipped = $0.verdict { return true }; return false } }

    /// The per-group table, then every FAILED case with its reason, then the
    /// SKIPPED ones (one line per distinct reason).
    public func text(title: String? = nil) -> String {
        func pad(_ s: String, _ n: Int, left: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, n - s.count))
            return left ? fill + s : s + fill
        }
        var lines: [String] = []
        if let title { lines.append(title) }
        lines.append(pad("group", 15) + pad("cases", 7, left: true) + pad("OK", 6, left: true)
            + pad("FAILED", 8, left: true) + pad("SKIPPED", 9, left: true) + pad("time", 9, left: true))
        var sum = Row(group: .framing)
        for row in rows {
            lines.append(pad(row.group.rawValue, 15) + pad("\(row.total)", 7, left: true) + pad("\(row.ok)", 6, left: true)
                + pad("\(row.failed)", 8, left: true) + pad("\(row.skipped)", 9, left: true)
                + pad(seconds(row.seconds), 9, left: true))
            sum.ok += row.ok
            sum.failed += row.failed
            sum.skipped += row.skipped
            sum.seconds += row.seconds
        }
        lines.append(pad("total", 15) + pad("\(sum.total)", 7, left: true) + pad("\(sum.ok)", 6, left: true)
            + pad("\(sum.failed)", 8, left: true) + pad("\(sum.skipped)", 9, left: true) + pad(seconds(sum.seconds), 9, left: true))
        for r in failed {
            lines.append("FAILED  \(r.testCase.id) [\(r.testCase.group.rawValue)] \(r.testCase.description): \(r.verdict.reason ?? "")")
        }
        var reasons: [String: [String]] = [:]
        var order: [String] = []
        for r in skipped {
            let reason = r.verdict.reason ?? ""
            if reasons[reason] == nil { order.append(reason) }
            reasons[reason, default: []].append(r.testCase.id)
        }
        for reason in order {
            lines.append("SKIPPED \(reasons[reason]!.joined(separator: " ")): \(reason)")
        }
        return lines.joined(separator: "\n")
    }

    private func seconds(_ s: Double) -> String {
        let tenths = Int((s * 100).rounded())
        return "\(tenths / 100).\(tenths % 100 < 10 ? "0" : "")\(tenths % 100)s"
    }
}
