import ArgumentParser
import IPIPDatastore
import IPIPResources

#if canImport(Glibc)
import Glibc
#endif

/// `--datastore`, shared by every command that reads or writes resources.
struct DatastoreOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "sqlite[:PATH] (default; /var/lib/ipipd/datastore.sqlite as root, else $XDG_DATA_HOME or ~/.local/share/ipipd/datastore.sqlite), manifests:PATH[,PATH...] (read-only) or etcd[:URL[,URL...]] (etcd v3 in Calico's key layout; default URL $ETCD_ENDPOINTS, else http://127.0.0.1:2379). Default: $IPIPD_DATASTORE, else etcd when DATASTORE_TYPE=etcdv3, else sqlite.",
            valueName: "type:location"))
    var datastore: String?

    /// Opens the store lazily, so that parse errors in the input are reported first.
    func opener() -> () throws(DatastoreError) -> any Datastore {
        let option = datastore
        return { () throws(DatastoreError) -> any Datastore in
            try DatastoreLocation.resolve(option: option).open()
        }
    }
}

/// Writes a command's output and exits with its code.
func finish(_ output: CtlOutput) throws {
    emit(output.stdout, to: 1)
    emit(output.stderr, to: 2)
    if output.exitCode != 0 { throw ExitCode(output.exitCode) }
}

func emit(_ text: String, to fd: Int32) {
    var text = text
    text.withUTF8 { buffer in
        var offset = 0
        while offset < buffer.count {
            let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { break }
        }
    }
}

/// Reads `-f`, or reports calicoctl's failure for an unreadable file.
func readInput(_ path: String) throws -> ManifestInput {
    do {
        return try ManifestInput.read(path)
    } catch {
        try finish(CtlOutput(stderr: "Failed to execute command: \(error)\n", exitCode: 1))
        throw ExitCode(1)
    }
}

struct WriteVerbOptions: ParsableArguments {
    @Option(
        name: .shortAndLong,
        help: ArgumentHelp(
            "A manifest file (YAML or JSON, several documents allowed), or - for standard input.", valueName: "file"))
    var filename: String
}

struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create resources from a file (calicoctl create).",
        discussion:
            "Documents are created in order; processing stops at the first error (what was created before stays).")

    @OptionGroup var file: WriteVerbOptions
    @Flag(help: "Count a resource that already exists as created instead of failing.")
    var skipExists = false
    @OptionGroup var store: DatastoreOptions

    func run() throws {
        try finish(
            CalicoCtl.execute(
                .create, input: readInput(file.filename), store: store.opener(),
                options: CalicoCtl.Options(skipExists: skipExists)))
    }
}

struct Apply: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or update resources from a file (calicoctl apply).",
        discussion: "Each document is created, or replaced when it exists; processing stops at the first error.")

    @OptionGroup var file: WriteVerbOptions
    @OptionGroup var store: DatastoreOptions

    func run() throws {
        try finish(CalicoCtl.execute(.apply, input: readInput(file.filename), store: store.opener()))
    }
}

struct Replace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replace existing resources from a file (calicoctl replace).",
        discussion: "A resourceVersion in the file must still be current (else: update conflict).")

    @OptionGroup var file: WriteVerbOptions
    @OptionGroup var store: DatastoreOptions

    func run() throws {
        try finish(CalicoCtl.execute(.replace, input: readInput(file.filename), store: store.opener()))
    }
}

struct Delete: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete resources named in a file, or KIND NAME (calicoctl delete).",
        discussion: "Deleting an IPPool first disables it, then releases its block affinities, then deletes it.")

    @Argument(help: "Kind (or alias: ippool, ipp, pool, node, no, blockaffinity, felixconfiguration, ...) and name.")
    var kindAndName: [String] = []
    @Option(name: .shortAndLong, help: ArgumentHelp("A manifest file, or - for standard input.", valueName: "file"))
    var filename: String?
    @Flag(help: "Count a resource that does not exist as deleted instead of failing.")
    var skipNotExists = false
    @OptionGroup var store: DatastoreOptions

    func validate() throws {
        if filename == nil, kindAndName.count != 2 { throw ValidationError("give KIND NAME, or -f FILE") }
        if filename != nil, !kindAndName.isEmpty { throw ValidationError("give either KIND NAME or -f FILE, not both") }
    }

    func run() throws {
        let options = CalicoCtl.Options(skipNotExists: skipNotExists)
        if let filename {
            try finish(CalicoCtl.execute(.delete, input: readInput(filename), store: store.opener(), options: options))
        } else {
            try finish(
                CalicoCtl.delete(
                    kind: kindAndName[0], name: kindAndName[1], store: store.opener(),
                    options: options))
        }
    }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show resources (calicoctl get): get KIND [NAME] or get -f FILE.",
        discussion:
            "Kinds and aliases are case-insensitive: ippool(s)/ipp(s)/pool(s), node(s)/no(s), blockaffinity/blockaffinities, felixconfiguration(s)."
    )

    @Argument(help: "Kind and optional name.")
    var kindAndName: [String] = []
    @Option(
        name: .shortAndLong,
        help: ArgumentHelp("A manifest file naming the resources, or - for standard input.", valueName: "file"))
    var filename: String?
    @Option(name: .shortAndLong, help: ArgumentHelp("ps (default), wide, yaml or json.", valueName: "format"))
    var output: String = "ps"
    @OptionGroup var store: DatastoreOptions

    func validate() throws {
        if filename == nil, !(1...2).contains(kindAndName.count) {
            throw ValidationError("give KIND [NAME], or -f FILE")
        }
        if filename != nil, !kindAndName.isEmpty {
            throw ValidationError("give either KIND [NAME] or -f FILE, not both")
        }
    }

    func run() throws {
        if let filename {
            try finish(CalicoCtl.get(input: readInput(filename), output: output, store: store.opener()))
        } else {
            try finish(
                CalicoCtl.get(
                    kind: kindAndName[0], name: kindAndName.count > 1 ? kindAndName[1] : nil,
                    output: output, store: store.opener()))
        }
    }
}

struct IPAMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipam",
        abstract: "Assign pool blocks to nodes without Calico's IPAM (recorded as BlockAffinity resources).",
        subcommands: [Claim.self, Release.self])

    struct Claim: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Claim the next free block of a pool (its blockSize) for a node.")

        @Option(help: "The node that gets the block.")
        var node: String
        @Option(help: "The pool to cut the block from (default: the enabled IPv4 pools in name order).")
        var pool: String?
        @OptionGroup var store: DatastoreOptions

        func run() throws {
            do {
                let claim = try IPAM.claim(in: store.opener()(), node: node, pool: pool)
                let a = claim.affinity
                try finish(
                    CtlOutput(
                        stdout: "Claimed block \(a.spec.cidr) of IPPool(\(claim.pool)) for node \(node) "
                            + "(BlockAffinity \(a.metadata.name), state \(a.spec.state.rawValue))\n"))
            } catch {
                try finish(CtlOutput(stderr: "Failed to claim a block: \(error)\n", exitCode: 1))
            }
        }
    }

    struct Release: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Release a node's block (delete its BlockAffinity).")

        @Option(help: "The node that holds the block.")
        var node: String
        @Option(help: "The block CIDR.")
        var cidr: String
        @OptionGroup var store: DatastoreOptions

        func run() throws {
            do {
                let a = try IPAM.release(in: store.opener()(), node: node, cidr: cidr)
                try finish(
                    CtlOutput(
                        stdout: "Released block \(a.spec.cidr) of node \(node) (BlockAffinity \(a.metadata.name))\n"))
            } catch {
                try finish(CtlOutput(stderr: "Failed to release the block: \(error)\n", exitCode: 1))
            }
        }
    }
}
