// IPIPLinux: every kernel call of the live dataplane. See the files of this
// module for the TUN device, sockets, rtnetlink and nftables.
import CIPIPLinux
import IPIPCore
