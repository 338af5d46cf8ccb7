import IPIPCore
import Yams
