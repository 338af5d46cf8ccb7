extension Engine {
    /// The two directions of a batch, for the one chunk driver both share.
    enum Direction { case egress, ingress }

    /// The chunk driver of both directions: expire NAT sessions at the batch's first arrival
    /// time, then per chunk of `lookupChunk` packets one batched LPM pass (egress: destinations,
    /// ingress: inner sources) and a warming pass over the NAT records the chunk will touch,
    /// then the per-packet path, then the offload bookkeeping of each packet. Always inlined
    /// with a constant direction, so each public entry point compiles to its own loop.
    @inline(__always)
    func process(
        _ direction: Direction, _ batch: inout PacketBatch, generated: inout PacketBatch,
        verdicts: inout VerdictBatch
    ) {
        precondition(verdicts.capacity >= batch.count, "verdict batch smaller than the packet batch")
        generated.removeAll()
        let topology = self.topology
        let pathMTUs = self.pathMTUs
        let nat = self.nat
        if batch.count > 0 { nat.expire(now: batch.time(of: 0)) }
        var start = 0
        while start < batch.count {
            let end = min(batch.count, start &+ Self.lookupChunk)
            switch direction {
            case .egress:
                lookUpDestinations(of: batch, from: start, to: end, in: topology)
                if nat.count > 0 { warmOutboundNAT(of: batch, from: start, to: end, nat: nat) }
            case .ingress:
                lookUpInnerSources(of: batch, from: start, to: end, in: topology)
                if nat.count > 0 {
                    warmInboundNAT(of: batch, from: start, to: end, localAddress: topology.localAddress, nat: nat)
                }
            }
            for i in start..<end {
                let route = lookupRoutes[i &- start]
                let now = batch.time(of: i)
                switch direction {
                case .egress:
                    verdicts[i] = egress(
                        i, in: &batch, generated: &generated, topology: topology, pathMTUs: pathMTUs,
                        nat: nat, routeIndex: route, now: now)
                case .ingress:
                    verdicts[i] = ingress(
                        i, in: &batch, topology: topology, pathMTUs: pathMTUs, nat: nat,
                        innerSourceRoute: route, now: now)
                }
                endOffload(of: i, in: batch)
            }
            start = end
        }
    }
}
